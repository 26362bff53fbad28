//! Who wrote what in a patient's record, as the versions store it (`client_id|subject`): for the
//! patient's own view of their record (what changed since their last visit, each entry's authors).

use super::{FhirError, Interaction, Store};
use crate::access::AccessContext;
use crate::db::{Bind, Sql};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

/// A resource's current version and who wrote it.
#[derive(QueryableByName, Debug)]
pub struct Authored {
    #[diesel(sql_type = Text)]
    pub res_type: String,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = BigInt)]
    pub version_id: i64,
    #[diesel(sql_type = Text)]
    pub author: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub body: Option<String>,
}

#[derive(QueryableByName)]
struct VersionAuthor {
    #[diesel(sql_type = BigInt)]
    version_id: i64,
    #[diesel(sql_type = Text)]
    author: String,
}

impl Store {
    /// The newest `limit` live resources of `types` in the caller's own record changed after
    /// `since` (microseconds), with the author of their current version.
    pub fn changed_since(
        &self,
        ctx: &AccessContext,
        types: &[&str],
        since: i64,
        limit: i64,
    ) -> Result<Vec<Authored>, FhirError> {
        let patient =
            ctx.compartment().ok_or_else(|| FhirError::forbidden("only a patient's own view lists changes"))?;
        for t in types {
            ctx.require(t, Interaction::Search)?;
        }
        let mut q = Sql::new(
            "SELECT r.res_type, r.id, r.version_id, COALESCE(v.author, '') AS author, CAST(r.body AS TEXT) AS body \
             FROM resources r JOIN resource_versions v ON v.rid = r.rid AND v.version_id = r.version_id \
             WHERE r.patient_id = ",
        );
        q.text(patient).push(" AND r.deleted = 0 AND r.last_updated > ").int(since).push(" AND r.res_type IN ");
        q.list(types.iter().map(|t| Bind::Text(t.to_string())));
        q.push(" ORDER BY r.last_updated DESC LIMIT ").int(limit);
        Ok(self.db.conn()?.load(&q)?)
    }

    /// The stored author of each version of `rtype/id`, oldest first, if the caller may read it
    /// (part of a read the caller makes and is audited for: not audited again).
    pub fn version_authors(&self, ctx: &AccessContext, rtype: &str, id: &str) -> Result<Vec<(i64, String)>, FhirError> {
        let mut conn = self.db.conn()?;
        super::store::read_in(&mut conn, ctx, rtype, id, Interaction::Read)?;
        let rows: Vec<VersionAuthor> = conn.load(&Sql::with(
            "SELECT version_id, COALESCE(author, '') AS author FROM resource_versions WHERE res_type = ? AND id = ? \
             ORDER BY version_id",
            [Bind::Text(rtype.into()), Bind::Text(id.into())],
        ))?;
        Ok(rows.into_iter().map(|r| (r.version_id, r.author)).collect())
    }
}
