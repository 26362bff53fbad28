//! Reading records whole, a keyset page at a time: one patient's compartment and the shared
//! resources it refers to (what `$everything`, the archive and transfers are built on), and every
//! record a caller reaches, one type at a time (Bulk Data export).

use super::search::readable_types_condition;
use super::store::{Row, Stored, ROW_COLUMNS};
use super::Interaction;
use super::{time, FhirError};
use crate::access::AccessContext;
use crate::db::{Bind, Conn, Sql};

/// A page of one patient's compartment.
pub struct Page<'a> {
    pub patient: &'a str,
    /// The types the caller may read there (their scope constraints are applied too).
    pub types: &'a [&'a str],
    /// Changed after this instant (microseconds).
    pub since: Option<i64>,
    /// Care dates overlapping this range; a resource with no date at all is kept (it may still
    /// be current).
    pub care: Option<time::Range>,
    /// After this row (the previous page's last `rid`).
    pub after: Option<i64>,
    pub limit: i64,
}

/// The live resources of a page, in row order.
pub(crate) fn page(conn: &mut Conn, ctx: &AccessContext, p: &Page) -> Result<Vec<Row>, FhirError> {
    let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.patient_id = "));
    q.text(p.patient).push(" AND r.deleted = 0");
    readable_types_condition(&mut q, ctx, p.types)?;
    if let Some(s) = p.since {
        q.push(" AND r.last_updated > ").int(s);
    }
    if let Some(care) = p.care {
        q.push(" AND (r.res_type = 'Patient' OR NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid) OR EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid AND d.hi >= ");
        q.int(care.lo).push(" AND d.lo <= ").int(care.hi).push("))");
    }
    if let Some(c) = p.after {
        q.push(" AND r.rid > ").int(c);
    }
    q.push(" ORDER BY r.rid LIMIT ").int(p.limit);
    Ok(conn.load(&q)?)
}

/// The live resources of `rtype` among `ids` (shared resources a record refers to).
pub fn live_by_ids(conn: &mut Conn, rtype: &str, ids: &[&str]) -> Result<Vec<Stored>, FhirError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.deleted = 0 AND r.res_type = "));
        q.text(rtype).push(" AND r.id IN ").list(chunk.iter().map(|id| Bind::Text((*id).into())));
        out.extend(conn.load::<Row>(&q)?.into_iter().map(Stored::from));
    }
    Ok(out)
}

/// A page of one type across every record the caller reaches (a Bulk Data export's file).
pub struct Export<'a> {
    pub rtype: &'a str,
    /// Changed after this instant (microseconds).
    pub since: Option<i64>,
    /// Only the members of this Group (its row): read as the job runs, so a member added or
    /// removed since kick-off counts.
    pub group_rid: Option<i64>,
    /// After this row (the previous page's last `rid`).
    pub after: i64,
    pub limit: i64,
}

/// The live resources of an export page, in row order, as far as `ctx` reaches and may read.
pub(crate) fn export_page(conn: &mut Conn, ctx: &AccessContext, p: &Export) -> Result<Vec<Row>, FhirError> {
    let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.deleted = 0"));
    readable_types_condition(&mut q, ctx, &[p.rtype])?;
    q.push(" AND r.rid > ").int(p.after);
    if let Some(s) = p.since {
        q.push(" AND r.last_updated > ").int(s);
    }
    if let Some(g) = p.group_rid {
        let column = if p.rtype == "Patient" { "r.id" } else { "r.patient_id" };
        q.push(&format!(" AND {column} IN (SELECT m.target_id FROM idx_ref m WHERE m.rid = "))
            .int(g)
            .push(" AND m.param = 'member' AND m.target_type = 'Patient')");
    }
    ctx.limit_search(&mut q, "r", p.rtype, Interaction::Read);
    q.push(" ORDER BY r.rid LIMIT ").int(p.limit);
    Ok(conn.load(&q)?)
}
