//! Reading a patient's compartment whole, a keyset page at a time, and the shared resources it
//! refers to: what `$everything`, the archive and transfers are built on.

use super::search::readable_types_condition;
use super::store::{Row, Stored, ROW_COLUMNS};
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
