//! The access log as the patient reads it: every access to their record (from the audit), in
//! words, filtered by date, and as CSV.

use super::{minute, own_patient, parse_day, PortalError};
use crate::audit::{search_audit_events, AuditEntry, AuditQuery, AuditRow, Auditor};
use crate::auth::clients::{self, Client};
use crate::auth::AccessContext;
use crate::db::Db;
use crate::fhir::Interaction;

const MAX_ROWS: i64 = 1000;

#[derive(Debug, Clone)]
pub struct LogLine {
    pub when: String,
    pub who: String,
    pub what: String,
    pub outcome: String,
    pub allowed: bool,
}

/// A date range the patient typed; both ends optional, inclusive.
#[derive(Debug, Clone, Default)]
pub struct Period {
    pub from: String,
    pub to: String,
}

fn who(r: &AuditRow, all: &[Client]) -> String {
    match r.client_id.as_deref() {
        Some("portal") => "You, in the portal".into(),
        Some("healthfolio-cli") | None => "Healthfolio (service operator)".into(),
        Some(c) => match all.iter().find(|x| x.client_id == c) {
            Some(x) => match &x.organization {
                Some(o) => format!("{} ({o})", x.name),
                None => x.name.clone(),
            },
            None => format!("App {c}"),
        },
    }
}

fn verb(interaction: &str) -> &str {
    match interaction {
        "read" | "vread" => "Read",
        "search-type" | "search-system" => "Searched",
        "history-instance" | "history-type" => "Read the history of",
        "create" => "Added",
        "update" => "Changed",
        "delete" => "Removed",
        "operation" => "Ran",
        "grant" => "Shared your record:",
        "grant-revoked" => "Stopped sharing:",
        other => other,
    }
}

fn what(r: &AuditRow) -> String {
    let v = verb(&r.interaction);
    match (&r.res_type, &r.res_id, r.count) {
        (Some(t), Some(id), _) if r.interaction == "operation" => {
            format!("{v} {} on {t}/{id}", r.query.as_deref().unwrap_or("an operation"))
        }
        (Some(t), Some(id), _) => format!("{v} {t}/{id}"),
        (Some(t), None, Some(n)) => format!("{v} {t} ({n} found)"),
        (Some(t), None, None) => format!("{v} {t}"),
        _ => format!("{v} {}", r.query.as_deref().unwrap_or_default()).trim().to_string(),
    }
}

fn line(r: &AuditRow, all: &[Client]) -> LogLine {
    let allowed = r.outcome == 0;
    let outcome = if allowed {
        "Allowed".to_string()
    } else {
        format!("Refused: {}", r.detail.as_deref().unwrap_or("no reason recorded"))
    };
    LogLine { when: minute(r.recorded), who: who(r, all), what: what(r), outcome, allowed }
}

/// Accesses to the signed-in patient's record, newest first (at most 1000).
pub fn access_log(db: &Db, audit: &Auditor, ctx: &AccessContext, period: &Period) -> Result<Vec<LogLine>, PortalError> {
    ctx.require("AuditEvent", Interaction::Search)?;
    let patient = own_patient(ctx)?;
    let mut q = AuditQuery { patient: Some(patient.into()), limit: MAX_ROWS, ..AuditQuery::default() };
    if !period.from.trim().is_empty() {
        q.from = Some(parse_day(&period.from, "The start of the period")?.lo);
    }
    if !period.to.trim().is_empty() {
        q.to = Some(parse_day(&period.to, "The end of the period")?.hi);
    }
    // Reads are logged a few milliseconds late; the patient should see the latest ones.
    audit.flush();
    let mut conn = db.conn()?;
    let rows = search_audit_events(&mut conn, &q)?;
    let all = clients::list(&mut conn)?;
    audit.record(ctx, AuditEntry::search(Some("AuditEvent"), "portal access log", Some(patient), Ok(rows.len())));
    Ok(rows.iter().map(|r| line(r, &all)).collect())
}

/// One CSV field: always quoted, and defused so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn to_csv(lines: &[LogLine]) -> String {
    let mut out = String::from("when,who,what,outcome\n");
    for l in lines {
        let fields = [&l.when, &l.who, &l.what, &l.outcome].map(|f| csv_field(f));
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("a \"b\""), "\"a \"\"b\"\"\"");
        assert_eq!(csv_field("=HYPERLINK()"), "\"'=HYPERLINK()\"");
    }
}
