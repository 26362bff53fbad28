//! The access log as the patient reads it: every access to their record (from the audit), in
//! words, filtered by who and by date, a page at a time, and as CSV.

use super::{minute, own_patient, parse_day, PortalError};
use crate::access::AccessContext;
use crate::audit::{search_audit_events, AuditEntry, AuditQuery, AuditRow, Auditor};
use crate::auth::clients::{self, Client};
use crate::db::Db;
use crate::fhir::Interaction;
use std::collections::{BTreeSet, HashMap};

/// Lines per page; the CSV holds up to `CSV_ROWS`.
const PAGE_ROWS: i64 = 200;
const CSV_ROWS: i64 = 20_000;

#[derive(Debug, Clone)]
pub struct LogLine {
    pub when: String,
    pub who: String,
    pub what: String,
    pub outcome: String,
    pub allowed: bool,
}

/// What the patient asked to see: a date range (both ends optional, inclusive), one actor (a
/// client id, `operator`, or empty for everyone), and where the page starts (older than `before`).
#[derive(Debug, Clone, Default)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub who: String,
    pub before: Option<i64>,
}

/// One page of the log, with the actors the patient can filter by.
#[derive(Debug, Clone, Default)]
pub struct LogView {
    pub lines: Vec<LogLine>,
    /// (value, label) for the "who" filter: everyone who appears in this record's log.
    pub actors: Vec<(String, String)>,
    /// Where the next (older) page starts, when there is one.
    pub older: Option<i64>,
}

/// Who did it: the app or system, and the person at the provider when one acted through it.
fn who(r: &AuditRow, all: &[Client], people: &People) -> String {
    let system = actor_name(r.client_id.as_deref(), all);
    match r.subject.as_ref().and_then(|s| people.get(s)) {
        Some(person) => format!("{person}, using {system}"),
        None => system,
    }
}

/// Practitioners by the account they signed in with (the audit's subject).
type People = HashMap<String, String>;

fn practitioners(conn: &mut crate::db::Conn, rows: &[AuditRow]) -> Result<People, PortalError> {
    let mut people = People::new();
    let subjects: BTreeSet<&str> = rows.iter().filter_map(|r| r.subject.as_deref()).collect();
    for s in subjects {
        let Some(account) = crate::auth::accounts::by_id(conn, s)? else { continue };
        let Some(pid) = account.fhir_user.strip_prefix("Practitioner/") else { continue };
        let name = crate::fhir::store::current(conn, "Practitioner", pid)?
            .and_then(|row| row.body)
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|p| p["name"].get(0).map(super::human_name));
        if let Some(name) = name {
            people.insert(s.to_string(), name);
        }
    }
    Ok(people)
}

fn actor_name(client_id: Option<&str>, all: &[Client]) -> String {
    match client_id {
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
        "grant-changed" => "Changed what you share:",
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

/// Why an access was refused, in words a patient can use (the stored detail is for operators).
fn refusal(detail: Option<&str>) -> String {
    let d = detail.unwrap_or_default();
    let why = if d.contains("not found") || d.contains("does not exist") {
        "it was outside what they may see"
    } else if d.contains("scope") || d.contains("grant") || d.contains("not allow") {
        "you have not allowed this"
    } else if d.contains("revoked") || d.contains("withdrawn") || d.contains("expired") {
        "their access had ended"
    } else {
        "it was not allowed"
    };
    format!("Refused: {why}")
}

fn line(r: &AuditRow, all: &[Client], people: &People) -> LogLine {
    let allowed = r.outcome == 0;
    let outcome = if allowed { "Allowed".to_string() } else { refusal(r.detail.as_deref()) };
    LogLine { when: minute(r.recorded), who: who(r, all, people), what: what(r), outcome, allowed }
}

/// A page of accesses to the signed-in patient's record, newest first.
pub fn access_log(db: &Db, audit: &Auditor, ctx: &AccessContext, period: &Period) -> Result<LogView, PortalError> {
    let (rows, all, actors, people) = rows(db, audit, ctx, period, PAGE_ROWS)?;
    let older = (rows.len() as i64 == PAGE_ROWS).then(|| rows.last().map(|r| r.aid)).flatten();
    Ok(LogView { lines: rows.iter().map(|r| line(r, &all, &people)).collect(), actors, older })
}

/// The whole filtered log (up to 20,000 lines), for the CSV download.
pub fn access_log_all(
    db: &Db,
    audit: &Auditor,
    ctx: &AccessContext,
    period: &Period,
) -> Result<Vec<LogLine>, PortalError> {
    let (rows, all, _, people) = rows(db, audit, ctx, &Period { before: None, ..period.clone() }, CSV_ROWS)?;
    Ok(rows.iter().map(|r| line(r, &all, &people)).collect())
}

type Rows = (Vec<AuditRow>, Vec<Client>, Vec<(String, String)>, People);

fn rows(db: &Db, audit: &Auditor, ctx: &AccessContext, period: &Period, limit: i64) -> Result<Rows, PortalError> {
    ctx.require("AuditEvent", Interaction::Search)?;
    let patient = own_patient(ctx)?;
    let mut q = AuditQuery { patient: Some(patient.into()), limit, before_aid: period.before, ..AuditQuery::default() };
    if !period.from.trim().is_empty() {
        q.from = Some(parse_day(&period.from, "The start of the period")?.lo);
    }
    if !period.to.trim().is_empty() {
        q.to = Some(parse_day(&period.to, "The end of the period")?.hi);
    }
    q.client = match period.who.as_str() {
        "" => None,
        "operator" => Some(None),
        c => Some(Some(c.to_string())),
    };
    // Reads are logged a few milliseconds late; the patient should see the latest ones.
    audit.flush();
    let mut conn = db.conn()?;
    let rows = search_audit_events(&mut conn, &q)?;
    let all = clients::list(&mut conn)?;
    let mut actors: Vec<(String, String)> = Vec::new();
    // One indexed probe per possible actor: the log itself may be long.
    let candidates =
        ["portal", "healthfolio-cli"].into_iter().map(str::to_string).chain(all.iter().map(|c| c.client_id.clone()));
    for c in candidates {
        if crate::audit::appears(&mut conn, patient, &c)? {
            let value = if c == "healthfolio-cli" { "operator".to_string() } else { c.clone() };
            actors.push((value, actor_name(Some(&c), &all)));
        }
    }
    actors.sort_by(|a, b| a.1.cmp(&b.1));
    let people = practitioners(&mut conn, &rows)?;
    audit.record(ctx, AuditEntry::search(Some("AuditEvent"), "portal access log", Some(patient), Ok(rows.len())));
    Ok((rows, all, actors, people))
}

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
