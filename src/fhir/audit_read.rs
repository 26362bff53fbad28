//! Reading the access log as a caller: scope, and only the records the caller can reach.

use super::{FhirError, Interaction};
use crate::access::AccessContext;
use crate::audit::{audit_event_json, search_audit_events, AuditEntry, AuditQuery};
use crate::db::Db;
use crate::time;
use serde_json::Value;

impl AuditQuery {
    /// `AuditEvent?patient=…&date=…&_count=…`
    pub fn from_params(
        params: &[(String, String)],
        compartment: Option<String>,
        strict: bool,
    ) -> Result<AuditQuery, FhirError> {
        let mut q = AuditQuery { limit: 100, patient: compartment, ..AuditQuery::default() };
        for (k, v) in params {
            match k.as_str() {
                "patient" => q.patient = Some(v.trim_start_matches("Patient/").to_string()),
                "_id" => q.id = Some(v.clone()),
                "_count" => {
                    q.limit =
                        v.parse::<i64>().map_err(|_| FhirError::invalid("_count must be a number"))?.clamp(1, 1000)
                }
                "date" => q.date(v)?,
                "_format" | "_pretty" => {}
                other if strict => {
                    return Err(FhirError::invalid(format!(
                        "AuditEvent search supports patient, date, _id and _count, not '{other}'"
                    )))
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn date(&mut self, v: &str) -> Result<(), FhirError> {
        let (prefix, rest) = match v.get(..2) {
            Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &v[2..]),
            _ => ("eq", v),
        };
        let r = time::parse_range(rest).ok_or_else(|| FhirError::invalid(format!("'{v}' is not a date")))?;
        match prefix {
            "ge" | "gt" => self.from = Some(r.lo),
            "le" | "lt" => self.to = Some(r.hi),
            _ => {
                self.from = Some(r.lo);
                self.to = Some(r.hi);
            }
        }
        Ok(())
    }
}

/// AuditEvents the caller may see, as FHIR JSON.
pub fn read_events(
    db: &Db,
    auditor: &crate::audit::Auditor,
    ctx: &AccessContext,
    mut q: AuditQuery,
    what: Interaction,
) -> Result<Vec<Value>, FhirError> {
    ctx.require("AuditEvent", what)?;
    if let Some(p) = ctx.compartment() {
        if q.patient.as_deref().is_some_and(|asked| asked != p) {
            return Ok(Vec::new());
        }
        q.patient = Some(p.to_string());
    }
    let mut conn = db.conn()?;
    let mut out = Vec::new();
    for row in search_audit_events(&mut conn, &q)? {
        if ctx.may_touch(&mut conn, "AuditEvent", row.patient_id.as_deref(), what)? {
            out.push(audit_event_json(&row));
        }
    }
    auditor.record(ctx, AuditEntry::search(Some("AuditEvent"), "", q.patient.as_deref(), Ok(out.len())));
    Ok(out)
}
