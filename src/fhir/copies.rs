//! Persisted copies: resources held here on behalf of a federated source, which owns them
//! (`resources.source`). The store keeps the owner; federation decides what to copy.

use crate::db::{Bind, Conn, DbError, Sql};
use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;

/// Marks `rtype/id` as a copy owned by `source`.
pub fn set_owner(conn: &mut Conn, rtype: &str, id: &str, source: &str) -> Result<(), DbError> {
    conn.execute(&Sql::with(
        "UPDATE resources SET source = ? WHERE res_type = ? AND id = ?",
        [Bind::Text(source.into()), Bind::Text(rtype.into()), Bind::Text(id.into())],
    ))?;
    Ok(())
}

/// `None` when there is no such resource; else its owning source (`None` inside: held here).
pub fn owner(conn: &mut Conn, rtype: &str, id: &str) -> Result<Option<Option<String>>, DbError> {
    #[derive(QueryableByName)]
    struct Owner {
        #[diesel(sql_type = Nullable<Text>)]
        source: Option<String>,
    }
    let q = Sql::with(
        "SELECT source FROM resources WHERE res_type = ? AND id = ?",
        [Bind::Text(rtype.into()), Bind::Text(id.into())],
    );
    Ok(conn.first::<Owner>(&q)?.map(|o| o.source))
}

/// Single-and-only: every copy `source` owns becomes an ordinary resource held here.
pub fn adopt(conn: &mut Conn, source: &str) -> Result<usize, DbError> {
    conn.execute(&Sql::with("UPDATE resources SET source = NULL WHERE source = ?", [Bind::Text(source.into())]))
}

/// A live Patient held here (not a copy), with its body.
#[derive(QueryableByName)]
pub struct HeldPatient {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub body: Option<String>,
}

/// Up to `limit` live Patients held here (not copies), oldest first, that `unless` does not
/// exclude: a condition on `r.id` its caller writes about its own tables.
pub fn held_patients(conn: &mut Conn, unless: impl FnOnce(&mut Sql), limit: i64) -> Result<Vec<HeldPatient>, DbError> {
    let mut q = Sql::new(
        "SELECT r.id AS id, CAST(r.body AS TEXT) AS body FROM resources r \
         WHERE r.res_type = 'Patient' AND r.deleted = 0 AND r.source IS NULL",
    );
    unless(&mut q);
    q.push(" ORDER BY r.rid LIMIT ").int(limit);
    conn.load(&q)
}
