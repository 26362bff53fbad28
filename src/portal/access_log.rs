//! The access log as the patient reads it: every access to their record (from the audit), in
//! words, filtered by who and by date, a page at a time, and as CSV.

use super::log_words::{self, Account, Names, Said};
use super::medicines::Names as Lookup;
use super::{concept_text, own_patient, parse_day, PortalError};
use crate::access::AccessContext;
use crate::audit::{search_audit_events, AuditEntry, AuditQuery, AuditRow};
use crate::auth::clients::{self, Client};
use crate::db::Conn;
use crate::fhir::{Interaction, Store};
use crate::time::format_instant;
use std::collections::{BTreeMap, BTreeSet};

/// Audit rows read for a page (a burst of reads is one line, so a page holds fewer lines), and
/// the most the CSV holds.
const PAGE_ROWS: i64 = 500;
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
/// client id, `operator`, or empty for everyone), whether their own views in the portal are
/// shown, and where the page starts (older than `before`).
#[derive(Debug, Clone, Default)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub who: String,
    pub own: bool,
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

/// Types whose entries the log names ("a prescription for Amlodipine 5mg tablets").
const NAMED: &[&str] = &[
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    "AllergyIntolerance",
    "Condition",
];

/// Everything the words need, looked up once for the rows: apps and their organisations, the
/// people behind the accounts, the entries' names (one search per type, in the patient's own
/// record, through the store) and the grants' grantees.
fn names(store: &Store, ctx: &AccessContext, conn: &mut Conn, rows: &[AuditRow]) -> Result<Names, PortalError> {
    let patient = own_patient(ctx)?;
    let mut lookup = Lookup::new(store, ctx);
    let mut names = Names::default();
    let all = clients::list(conn)?;
    for c in &all {
        let org = c.organization.as_deref().and_then(|o| lookup.name(o));
        names.apps.insert(c.client_id.clone(), (c.name.clone(), org));
    }
    let subjects: BTreeSet<&str> = rows
        .iter()
        .filter(|r| !matches!(r.client_id.as_deref(), None | Some("portal" | "healthfolio-cli")))
        .filter_map(|r| r.subject.as_deref())
        .collect();
    for s in subjects {
        let Some(account) = crate::auth::accounts::by_id(conn, s)? else { continue };
        let who = if account.fhir_user == format!("Patient/{patient}") {
            Account::Own
        } else if account.fhir_user.starts_with("Practitioner/") {
            let org = account.organization.as_deref().and_then(|o| lookup.name(o));
            Account::Practitioner(lookup.name(&account.fhir_user), org)
        } else {
            Account::Other
        };
        names.accounts.insert(s.to_string(), who);
    }
    let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        if let (Some(t), Some(id)) = (r.res_type.as_deref(), r.res_id.as_deref()) {
            if NAMED.contains(&t) {
                wanted.entry(t).or_default().insert(id);
            }
        }
    }
    for (rtype, ids) in wanted {
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(500) {
            for body in super::search(store, ctx, rtype, &[("_id", &chunk.join(","))])? {
                let name = match rtype {
                    "AllergyIntolerance" | "Condition" => concept_text(&body["code"]),
                    _ => Some(lookup.medicine(&body)),
                };
                if let (Some(id), Some(name)) = (body["id"].as_str(), name) {
                    names.entries.insert(format!("{rtype}/{id}"), name);
                }
            }
        }
    }
    for g in crate::consent::list(conn, Some(patient))? {
        names.grants.insert(g.id.clone(), grantee(&g, &all, &names, &mut lookup));
    }
    Ok(names)
}

fn grantee(g: &crate::consent::Grant, all: &[Client], names: &Names, lookup: &mut Lookup) -> String {
    match (&g.client_id, &g.organization) {
        (Some(c), _) => names.apps.get(c).map_or_else(|| format!("app {c}"), |(n, _)| n.clone()),
        (None, Some(o)) => lookup
            .name(o)
            .or_else(|| all.iter().find(|c| c.organization.as_ref() == Some(o)).map(|c| c.name.clone()))
            .unwrap_or_else(|| "a provider organisation".into()),
        _ => "someone unknown".into(),
    }
}

/// Who an actor of the "who" filter is, in words.
fn actor_name(client_id: &str, names: &Names) -> String {
    match client_id {
        "portal" => "You, in the portal".into(),
        "healthfolio-cli" => "Healthfolio (service operator)".into(),
        c => match names.apps.get(c) {
            Some((app, Some(org))) if org != app => format!("{org} ({app})"),
            Some((app, _)) => app.clone(),
            None => format!("App {c}"),
        },
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

fn line(s: &Said, rows: &BTreeMap<i64, &AuditRow>) -> LogLine {
    let outcome = if s.allowed {
        "Allowed".to_string()
    } else {
        refusal(s.aids.first().and_then(|a| rows.get(a)).and_then(|r| r.detail.as_deref()))
    };
    LogLine { when: s.when.clone(), who: s.who.clone(), what: super::capitalised(&s.what), outcome, allowed: s.allowed }
}

/// A page of accesses to the signed-in patient's record, newest first, a burst of reads by one
/// caller as one line; the patient's own views in the portal only when asked for.
pub fn access_log(store: &Store, ctx: &AccessContext, period: &Period) -> Result<LogView, PortalError> {
    let (rows, names, actors) = rows(store, ctx, period, !period.own, PAGE_ROWS)?;
    let mut said = log_words::tell(&rows, &names);
    let mut older = None;
    if rows.len() as i64 == PAGE_ROWS {
        // A full page: there may be more. The oldest line may go on beyond this page, so (when
        // it is not the only one) it starts the next page instead, whole.
        let oldest = rows.iter().map(|r| r.aid).min().unwrap_or_default();
        older = Some(oldest);
        if said.len() > 1 {
            if let Some(i) = said.iter().position(|s| s.aids.contains(&oldest)) {
                let cut = said.remove(i);
                let newest = rows.iter().map(|r| r.aid).max().unwrap_or_default();
                let from = cut.aids.iter().max().map_or(oldest, |a| a + 1);
                older = Some(if from > newest { oldest } else { from });
            }
        }
    }
    let by_aid: BTreeMap<i64, &AuditRow> = rows.iter().map(|r| (r.aid, r)).collect();
    Ok(LogView { lines: said.iter().map(|s| line(s, &by_aid)).collect(), actors, older })
}

/// One row of the CSV: every audit row, in the same words as the page, with its raw fields.
#[derive(Debug, Clone)]
pub struct CsvRow {
    pub line: LogLine,
    pub row: AuditRow,
}

/// The whole filtered log (up to 20,000 rows, the patient's own views included: it is the audit
/// record), one line per row, for the CSV download.
pub fn access_log_all(store: &Store, ctx: &AccessContext, period: &Period) -> Result<Vec<CsvRow>, PortalError> {
    let (rows, names, _) = rows(store, ctx, &Period { before: None, ..period.clone() }, false, CSV_ROWS)?;
    let mut who = BTreeMap::new();
    let mut words = BTreeMap::new();
    for s in log_words::tell(&rows, &names) {
        for (aid, w) in &s.each {
            who.insert(*aid, s.who.clone());
            words.insert(*aid, w.clone());
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let allowed = r.outcome == 0;
            let line = LogLine {
                when: super::minute(r.recorded),
                who: who.get(&r.aid).cloned().unwrap_or_else(|| log_words::who(&r, &names)),
                what: super::capitalised(&words.get(&r.aid).cloned().unwrap_or_default()),
                outcome: if allowed { "Allowed".into() } else { refusal(r.detail.as_deref()) },
                allowed,
            };
            CsvRow { line, row: r }
        })
        .collect())
}

type Rows = (Vec<AuditRow>, Names, Vec<(String, String)>);

fn rows(store: &Store, ctx: &AccessContext, period: &Period, hide_own: bool, limit: i64) -> Result<Rows, PortalError> {
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
    if hide_own {
        q.hide_views_of = Some(ctx.client_id.clone());
    }
    let (rows, names) = fetch(store, ctx, &q)?;
    let mut conn = store.db.conn()?;
    let mut actors: Vec<(String, String)> = Vec::new();
    // One indexed probe per possible actor: the log itself may be long.
    let candidates = ["portal", "healthfolio-cli"].into_iter().map(str::to_string).chain(names.apps.keys().cloned());
    for c in candidates {
        if crate::audit::appears(&mut conn, patient, &c)? {
            let value = if c == "healthfolio-cli" { "operator".to_string() } else { c.clone() };
            actors.push((value, actor_name(&c, &names)));
        }
    }
    actors.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((rows, names, actors))
}

/// The rows of `q` and the names their words need; the reading itself is logged.
fn fetch(store: &Store, ctx: &AccessContext, q: &AuditQuery) -> Result<(Vec<AuditRow>, Names), PortalError> {
    ctx.require("AuditEvent", Interaction::Search)?;
    let patient = own_patient(ctx)?;
    // Reads are logged a few milliseconds late; the patient should see the latest ones.
    store.audit.flush();
    let mut conn = store.db.conn()?;
    let rows = search_audit_events(&mut conn, q)?;
    let names = names(store, ctx, &mut conn, &rows)?;
    store.audit.record(ctx, AuditEntry::search(Some("AuditEvent"), "portal access log", Some(patient), Ok(rows.len())));
    Ok((rows, names))
}

/// What others (apps, providers, the service) did with the record after `since`, newest first,
/// at most `most` lines, in the log's words: for the home page.
pub fn others_since(store: &Store, ctx: &AccessContext, since: i64, most: usize) -> Result<Vec<LogLine>, PortalError> {
    let patient = own_patient(ctx)?;
    let q = AuditQuery {
        patient: Some(patient.into()),
        from: Some(since + 1),
        hide_views_of: Some(ctx.client_id.clone()),
        limit: PAGE_ROWS,
        ..AuditQuery::default()
    };
    let (mut rows, names) = fetch(store, ctx, &q)?;
    rows.retain(|r| r.client_id.as_deref() != Some(ctx.client_id.as_str()));
    let by_aid: BTreeMap<i64, &AuditRow> = rows.iter().map(|r| (r.aid, r)).collect();
    Ok(log_words::tell(&rows, &names).iter().take(most).map(|s| line(s, &by_aid)).collect())
}

fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The CSV: the words first (UK time), then the row as the audit holds it (UTC).
pub fn to_csv(rows: &[CsvRow]) -> String {
    let mut out = String::from(
        "when,who,what,outcome,recorded_utc,event_id,client_id,subject,interaction,resource,query,outcome_code,detail,count\n",
    );
    for CsvRow { line: l, row: r } in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let resource = match (&r.res_type, &r.res_id) {
            (Some(t), Some(id)) => format!("{t}/{id}"),
            (Some(t), None) => t.clone(),
            _ => String::new(),
        };
        let fields = [
            l.when.clone(),
            l.who.clone(),
            l.what.clone(),
            l.outcome.clone(),
            format_instant(r.recorded),
            r.id.clone(),
            opt(&r.client_id),
            opt(&r.subject),
            r.interaction.clone(),
            resource,
            opt(&r.query),
            r.outcome.to_string(),
            opt(&r.detail),
            r.count.map(|n| n.to_string()).unwrap_or_default(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
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
