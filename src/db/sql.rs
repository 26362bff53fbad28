//! A statement and its parameters, written once for both backends.

use super::Backend;
use diesel::backend::Backend as DieselBackend;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text};

#[derive(Clone, Debug)]
pub enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    /// A JSON document: `jsonb` on PostgreSQL, text on SQLite.
    Json(String),
    OptJson(Option<String>),
}

impl Bind {
    pub(super) fn apply<'f, DB>(&self, q: BoxedSqlQuery<'f, DB, SqlQuery>) -> BoxedSqlQuery<'f, DB, SqlQuery>
    where
        DB: DieselBackend + HasSqlType<Text> + HasSqlType<BigInt>,
        String: ToSql<Text, DB>,
        Option<String>: ToSql<Nullable<Text>, DB>,
        i64: ToSql<BigInt, DB>,
        Option<i64>: ToSql<Nullable<BigInt>, DB>,
    {
        match self {
            Bind::Text(s) | Bind::Json(s) => q.bind::<Text, _>(s.clone()),
            Bind::OptText(s) | Bind::OptJson(s) => q.bind::<Nullable<Text>, _>(s.clone()),
            Bind::Int(n) => q.bind::<BigInt, _>(*n),
            Bind::OptInt(n) => q.bind::<Nullable<BigInt>, _>(*n),
        }
    }
}

/// How many request-shaped statements ([`Sql::reused_while_few`]) are kept prepared.
pub const SHAPES: usize = 256;

/// SQL text with `?` placeholders, in the order of `binds`.
#[derive(Clone, Debug, Default)]
pub struct Sql {
    text: String,
    binds: Vec<Bind>,
    /// Prepared once per connection and reused: only for statements of a fixed shape (the cache
    /// is keyed by the text and never evicts; see [`Sql::reused`]).
    reuse: bool,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql { text: text.to_string(), binds: Vec::new(), reuse: false }
    }

    /// Marks a hot statement of fixed shape (no lists of varying length) to be prepared once per
    /// connection: PostgreSQL then skips planning and SQLite parsing on every later run.
    pub fn reused(mut self) -> Sql {
        self.reuse = true;
        self
    }

    /// Marks a statement whose shape follows its request (a search: which parameters, how many
    /// values) to be prepared once per connection, as long as the process has met fewer than
    /// [`SHAPES`] such shapes; a shape first met after that runs unprepared, so no stream of
    /// requests can grow the per-connection statement caches without bound.
    pub fn reused_while_few(self) -> Sql {
        static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
        let Ok(mut seen) = SEEN.lock() else { return self };
        let seen = seen.get_or_insert_with(Default::default);
        if seen.contains(&self.text) || (seen.len() < SHAPES && seen.insert(self.text.clone())) {
            self.reused()
        } else {
            self
        }
    }

    pub(super) fn is_reused(&self) -> bool {
        self.reuse
    }

    /// Appends SQL text (never user input: that goes through `bind`).
    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `b`.
    pub fn bind(&mut self, b: Bind) -> &mut Sql {
        self.text.push('?');
        self.binds.push(b);
        self
    }

    pub fn text(&mut self, s: impl Into<String>) -> &mut Sql {
        self.bind(Bind::Text(s.into()))
    }

    pub fn int(&mut self, n: i64) -> &mut Sql {
        self.bind(Bind::Int(n))
    }

    /// `(?, ?, …)` for an IN list.
    pub fn list(&mut self, items: impl IntoIterator<Item = Bind>) -> &mut Sql {
        self.text.push('(');
        for (i, b) in items.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(b);
        }
        self.text.push(')');
        self
    }

    /// Builds a statement in one expression: `Sql::with("… = ?", [Bind::Text(x)])`.
    pub fn with(text: &str, binds: impl IntoIterator<Item = Bind>) -> Sql {
        let binds: Vec<Bind> = binds.into_iter().collect();
        debug_assert_eq!(text.matches('?').count(), binds.len());
        Sql { text: text.to_string(), binds, reuse: false }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn contains(&self, text: &str) -> bool {
        self.text.contains(text)
    }

    /// Rewrites SQL text (never a placeholder), keeping the parameters in order.
    pub fn replace(&mut self, from: &str, to: &str) {
        debug_assert!(!from.contains('?') && !to.contains('?'));
        self.text = self.text.replace(from, to);
    }

    /// Appends another statement fragment with its parameters.
    pub fn append(&mut self, other: &Sql) -> &mut Sql {
        self.text.push_str(&other.text);
        self.binds.extend(other.binds.iter().cloned());
        self
    }

    pub fn binds(&self) -> &[Bind] {
        &self.binds
    }

    pub(super) fn render(&self, backend: Backend) -> String {
        match backend {
            Backend::Sqlite => self.text.clone(),
            Backend::Postgres => {
                let mut out = String::with_capacity(self.text.len() + 16);
                let mut n = 0;
                for ch in self.text.chars() {
                    if ch == '?' {
                        n += 1;
                        match self.binds.get(n - 1) {
                            Some(Bind::Json(_) | Bind::OptJson(_)) => out.push_str(&format!("CAST(${n} AS jsonb)")),
                            _ => out.push_str(&format!("${n}")),
                        }
                    } else {
                        out.push(ch);
                    }
                }
                out
            }
        }
    }
}

/// A statement diesel may keep prepared (unlike `sql_query`, which it never caches). Diesel writes
/// each placeholder itself (`?` or `$n`), so this holds the backend-neutral text.
pub(super) struct Prepared<'a> {
    pub sql: &'a Sql,
    pub backend: Backend,
}

impl diesel::query_builder::QueryId for Prepared<'_> {
    type QueryId = ();
    // No static id: diesel keys the cache by the SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Prepared<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<C> diesel::RunQueryDsl<C> for Prepared<'_> {}

impl<DB> diesel::query_builder::QueryFragment<DB> for Prepared<'_>
where
    DB: DieselBackend + HasSqlType<Text> + HasSqlType<BigInt>,
    String: ToSql<Text, DB>,
    Option<String>: ToSql<Nullable<Text>, DB>,
    i64: ToSql<BigInt, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        let mut pieces = self.sql.text.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        for (b, piece) in self.sql.binds.iter().zip(pieces) {
            let json_cast = self.backend == Backend::Postgres && matches!(b, Bind::Json(_) | Bind::OptJson(_));
            if json_cast {
                out.push_sql("CAST(");
            }
            match b {
                Bind::Text(s) | Bind::Json(s) => out.push_bind_param::<Text, _>(s)?,
                Bind::OptText(s) | Bind::OptJson(s) => out.push_bind_param::<Nullable<Text>, _>(s)?,
                Bind::Int(n) => out.push_bind_param::<BigInt, _>(n)?,
                Bind::OptInt(n) => out.push_bind_param::<Nullable<BigInt>, _>(n)?,
            }
            if json_cast {
                out.push_sql(" AS jsonb)");
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_statements_get_one_placeholder_per_bind() {
        let q = Sql::with(
            "UPDATE t SET body = ? WHERE id = ? AND n > ?",
            [Bind::Json("{}".into()), Bind::Text("a".into()), Bind::Int(3)],
        )
        .reused();
        let pg = Prepared { sql: &q, backend: Backend::Postgres };
        let pg = diesel::debug_query::<diesel::pg::Pg, _>(&pg).to_string();
        assert!(pg.starts_with("UPDATE t SET body = CAST($1 AS jsonb) WHERE id = $2 AND n > $3 -- binds"), "{pg}");
        let lite = Prepared { sql: &q, backend: Backend::Sqlite };
        let lite = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&lite).to_string();
        assert!(lite.starts_with("UPDATE t SET body = ? WHERE id = ? AND n > ? -- binds"), "{lite}");
    }

    #[test]
    fn postgres_placeholders_are_numbered_and_json_is_cast() {
        let q = Sql::with(
            "INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
            [Bind::Int(1), Bind::Json("{}".into()), Bind::Text("x".into())],
        );
        assert_eq!(q.render(Backend::Postgres), "INSERT INTO t (a, b, c) VALUES ($1, CAST($2 AS jsonb), $3)");
        assert_eq!(q.render(Backend::Sqlite), "INSERT INTO t (a, b, c) VALUES (?, ?, ?)");
    }
}
