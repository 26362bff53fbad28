//! History: every version, newest first, paged by keyset on (last_updated, rid, version).

use super::search::within_constraints;
use super::store::{Row, Stored};
use super::{time, FhirError, Interaction, Store};
use crate::access::AccessContext;
use crate::db::Sql;

#[derive(Debug, Default, Clone)]
pub struct HistoryRequest {
    pub rtype: Option<String>,
    pub id: Option<String>,
    pub since: Option<String>,
    pub count: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug)]
pub struct History {
    pub versions: Vec<Stored>,
    /// The query of the next page, if there is one.
    pub next: Option<Vec<(String, String)>>,
}

impl Store {
    pub fn history(&self, ctx: &AccessContext, req: &HistoryRequest) -> Result<History, FhirError> {
        match (&req.rtype, &req.id) {
            (Some(t), Some(_)) => ctx.require(t, Interaction::Read)?,
            (Some(t), None) => ctx.require(t, Interaction::Search)?,
            (None, _) => {}
        }
        let count = req.count.unwrap_or(50).clamp(1, 1000);
        let mut q = Sql::new(
            "SELECT v.rid, v.res_type, v.id, v.version_id, v.last_updated, v.deleted, v.patient_id, \
             CAST(v.body AS TEXT) AS body FROM resource_versions v WHERE 1 = 1",
        );
        if let Some(t) = &req.rtype {
            q.push(" AND v.res_type = ").text(t.clone());
        }
        if let Some(id) = &req.id {
            q.push(" AND v.id = ").text(id.clone());
        }
        if let Some(s) = &req.since {
            let at = time::parse_range(s)
                .ok_or_else(|| FhirError::invalid(format!("_since '{s}' is not a FHIR instant")))?;
            q.push(" AND v.last_updated > ").int(at.lo);
        }
        if let Some(c) = &req.cursor {
            let (lu, rid, ver) = parse_cursor(c)?;
            q.push(" AND (v.last_updated < ").int(lu);
            q.push(" OR (v.last_updated = ").int(lu).push(" AND (v.rid < ").int(rid);
            q.push(" OR (v.rid = ").int(rid).push(" AND v.version_id < ").int(ver).push("))))");
        }
        q.push(" ORDER BY v.last_updated DESC, v.rid DESC, v.version_id DESC LIMIT ").int(count + 1);
        let mut conn = self.read_conn(ctx)?;
        let rows: Vec<Row> = conn.load(&q)?;
        let more = rows.len() as i64 > count;
        let mut next = None;
        let mut versions: Vec<Stored> = Vec::with_capacity(rows.len());
        for r in rows.into_iter().take(count as usize) {
            next = Some((r.last_updated, r.rid, r.version_id));
            let rid = r.rid;
            let s = Stored::from(r);
            // History shows only versions of resources the caller could read now: scope, reach,
            // and a query-constrained scope (`?status=active`) on the resource as it is now.
            if ctx.may_touch(&mut conn, &s.rtype, s.patient_id.as_deref(), Interaction::Read)?
                && within_constraints(&mut conn, ctx, &s.rtype, rid, Interaction::Read)?
            {
                versions.push(s);
            }
        }
        let next = next.filter(|_| more).map(|(lu, rid, ver)| {
            let mut p = vec![("_count".to_string(), count.to_string())];
            if let Some(s) = &req.since {
                p.push(("_since".to_string(), s.clone()));
            }
            p.push(("_cursor".to_string(), format!("{lu}_{rid}_{ver}")));
            p
        });
        let interaction = if req.id.is_some() { "history-instance" } else { "history-type" };
        self.audit.record(
            ctx,
            crate::audit::AuditEntry::search(req.rtype.as_deref(), interaction, ctx.compartment(), Ok(versions.len())),
        );
        Ok(History { versions, next })
    }
}

fn parse_cursor(c: &str) -> Result<(i64, i64, i64), FhirError> {
    let bad = || FhirError::invalid("the history cursor is malformed; follow the server's next link");
    let parts: Vec<i64> = c.split('_').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => Err(bad()),
    }
}
