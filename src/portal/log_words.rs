//! The access log in a patient's words: who (person and organisation, app, or "You"), what
//! ("read your medicines", "added a prescription for Amlodipine 5mg tablets") and when, with a
//! burst of reads by one caller told as one line. Pure: the names it needs are looked up first
//! ([`Names`]), once per page.

use super::minute;
use crate::audit::AuditRow;
use std::collections::HashMap;

/// Reads by one caller this close together (each to the next) are one line.
const BURST_MICROS: i64 = 5 * 60 * 1_000_000;
/// Writes this close together (a transaction, an import) are one line.
const WRITE_MICROS: i64 = 5 * 1_000_000;
/// An import's own row follows its writes by at most this much.
const IMPORT_MICROS: i64 = 60 * 1_000_000;

/// What the words need beyond the rows, looked up once for a page.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// client id → (app name, its organisation's name).
    pub apps: HashMap<String, (String, Option<String>)>,
    /// account id (an audit row's subject) → who signed in with it.
    pub accounts: HashMap<String, Account>,
    /// `Type/id` → the entry in words ("a prescription for …" without the article: see [`Entry`]).
    pub entries: HashMap<String, String>,
    /// grant id → whom it shares with.
    pub grants: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Account {
    /// The patient whose log this is.
    Own,
    /// A practitioner: name, organisation name.
    Practitioner(Option<String>, Option<String>),
    Other,
}

/// One line of the log: one row, or a burst of rows by one caller.
#[derive(Debug, Clone)]
pub struct Said {
    pub when: String,
    pub who: String,
    pub what: String,
    pub allowed: bool,
    /// The audit rows (their `aid`) the line tells of, newest first.
    pub aids: Vec<i64>,
    /// What each of those rows says alone, for the CSV.
    pub each: Vec<(i64, String)>,
}

/// The nouns of an entry type: one, many, and how a name joins the one ("prescription for X").
struct Noun {
    one: &'static str,
    many: &'static str,
    join: &'static str,
    /// The part of the record it belongs to ("medicines").
    topic: &'static str,
}

fn noun(rtype: &str) -> Option<Noun> {
    let n = |one, many, join, topic| Some(Noun { one, many, join, topic });
    match rtype {
        "MedicationRequest" => n("prescription", "prescriptions", " for ", "medicines"),
        "MedicationStatement" => n("note that you take", "notes of medicines you take", " ", "medicines"),
        "MedicationDispense" => n("dispensing", "dispensings", " of ", "medicines"),
        "MedicationAdministration" => n("dose given", "doses given", " of ", "medicines"),
        "AllergyIntolerance" => n("allergy", "allergies", " to ", "allergies"),
        "Condition" => n("health problem", "health problems", ": ", "health problems"),
        "Patient" => n("personal details", "personal details", "", "personal details"),
        "Consent" => n("sharing choice", "sharing choices", "", "sharing choices"),
        "AuditEvent" => n("access log entry", "access log", "", "access log"),
        _ => None,
    }
}

/// Supporting resources, read alongside the main ones: never a line of their own when the
/// caller read something else too.
fn supporting(rtype: Option<&str>) -> Option<&'static str> {
    match rtype? {
        "Provenance" => Some("where your entries came from"),
        "Practitioner" | "PractitionerRole" | "Organization" => Some("who treats you"),
        "Medication" => Some("details of your medicines"),
        _ => None,
    }
}

fn is_read(interaction: &str) -> bool {
    matches!(interaction, "read" | "vread" | "search-type" | "search-system") || interaction.starts_with("history")
}

fn is_write(interaction: &str) -> bool {
    matches!(interaction, "create" | "update" | "delete" | "patch" | "write" | "transaction" | "batch")
}

/// Bookkeeping about a write: the Provenance the service records about someone's write or
/// import (or a writer records with its own). Told as part of that write, never as the
/// operator's "added Provenance".
fn bookkeeping(r: &AuditRow) -> bool {
    matches!(r.subject.as_deref(), Some("service:provenance" | "service:import"))
        || (r.res_type.as_deref() == Some("Provenance") && is_write(&r.interaction))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Read,
    Support,
    Write,
    Operation,
    Event,
}

fn kind(r: &AuditRow) -> Kind {
    if is_read(&r.interaction) {
        if supporting(r.res_type.as_deref()).is_some() {
            Kind::Support
        } else {
            Kind::Read
        }
    } else if is_write(&r.interaction) {
        Kind::Write
    } else if r.interaction == "operation" {
        Kind::Operation
    } else {
        Kind::Event
    }
}

/// Who did it, in words.
pub(crate) fn who(r: &AuditRow, names: &Names) -> String {
    let subject = r.subject.as_deref().unwrap_or_default();
    match r.client_id.as_deref() {
        Some("portal") => "You".into(),
        Some("healthfolio-cli") | None => match subject.strip_prefix("service:") {
            Some("sign-up") => "You".into(),
            Some("federation" | "feed") => "Healthfolio, copying from a linked record".into(),
            Some(_) => "Healthfolio".into(),
            None => "Healthfolio (service operator)".into(),
        },
        Some(c) => {
            let (app, org) = names.apps.get(c).cloned().unwrap_or_else(|| (format!("App {c}"), None));
            match names.accounts.get(subject) {
                Some(Account::Own) => format!("You, through {app}"),
                Some(Account::Practitioner(person, own_org)) => {
                    let org = own_org.clone().or(org);
                    let at = [person.clone(), org].into_iter().flatten().collect::<Vec<_>>().join(", ");
                    if at.is_empty() {
                        app
                    } else {
                        format!("{at} ({app})")
                    }
                }
                _ => match org {
                    Some(o) if o != app => format!("{o} ({app})"),
                    _ => app,
                },
            }
        }
    }
}

/// A verb in its two forms: "read" / "read", "searched" / "search".
#[derive(Clone, Copy)]
struct Verb {
    past: &'static str,
    base: &'static str,
}

const READ: Verb = Verb { past: "read", base: "read" };

fn write_verb(r: &AuditRow) -> Verb {
    match (r.interaction.as_str(), r.action.as_str()) {
        ("delete", _) | (_, "D") => Verb { past: "removed", base: "remove" },
        ("create", _) | (_, "C") => Verb { past: "added", base: "add" },
        _ => Verb { past: "changed", base: "change" },
    }
}

/// Whether two writes are told with the same verb ("created your record" is not "added").
fn same_verb(a: &AuditRow, b: &AuditRow) -> bool {
    let none = Names::default();
    one(a, &none).0.past == one(b, &none).0.past
}

/// `Type/id` of a row, when it names one.
fn reference(r: &AuditRow) -> Option<String> {
    Some(format!("{}/{}", r.res_type.as_deref()?, r.res_id.as_deref()?))
}

/// One entry with its article: "a prescription for X", "your allergy to Y", "your personal details".
fn entry(r: &AuditRow, names: &Names, article: &str) -> String {
    let rtype = r.res_type.as_deref().unwrap_or_default();
    let Some(n) = noun(rtype) else {
        return match rtype {
            "" => "your record".into(),
            t => format!("{article} {t} entry"),
        };
    };
    if n.join.is_empty() {
        return format!("your {}", n.one);
    }
    let article = if article == "a" && n.one.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { article };
    match reference(r).and_then(|k| names.entries.get(&k)) {
        Some(name) => format!("{article} {}{}{name}", n.one, n.join),
        None if article == "your" => format!("one of your {}", n.many),
        None => format!("{article} {}", n.one),
    }
}

/// The part of the record a row touched ("medicines"), for a burst.
fn topic(r: &AuditRow) -> String {
    match r.res_type.as_deref() {
        None => "record".into(),
        Some(t) => noun(t).map_or_else(|| format!("{t} entries"), |n| n.topic.to_string()),
    }
}

fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn found(count: Option<i64>) -> String {
    match count {
        Some(0) => " (none found)".into(),
        Some(1) => " (1 found)".into(),
        Some(n) => format!(" ({n} found)"),
        None => String::new(),
    }
}

/// What one row did, as (verb, the rest).
fn one(r: &AuditRow, names: &Names) -> (Verb, String) {
    let query = r.query.as_deref().unwrap_or_default();
    match kind(r) {
        _ if bookkeeping(r) => (Verb { past: "recorded", base: "record" }, "where an entry came from".into()),
        Kind::Support => {
            (Verb { past: "looked up", base: "look up" }, supporting(r.res_type.as_deref()).unwrap_or_default().into())
        }
        Kind::Read => match r.interaction.as_str() {
            "read" | "vread" => (READ, entry(r, names, "your")),
            "search-system" => (Verb { past: "searched", base: "search" }, format!("your record{}", found(r.count))),
            i if i.starts_with("history") => (READ, format!("the history of your {}", topic(r))),
            _ if query == "portal access log" || r.res_type.as_deref() == Some("AuditEvent") => {
                (READ, "your access log".into())
            }
            _ => (Verb { past: "searched", base: "search" }, format!("your {}{}", topic(r), found(r.count))),
        },
        Kind::Write => {
            let v = write_verb(r);
            let article = if v.past == "added" { "a" } else { "your" };
            if r.res_type.as_deref() == Some("Patient") && v.past == "added" {
                return (Verb { past: "created", base: "create" }, "your record".into());
            }
            (v, entry(r, names, article))
        }
        Kind::Operation => operation(r, query),
        Kind::Event => event(r, names, query),
    }
}

fn operation(r: &AuditRow, query: &str) -> (Verb, String) {
    let n = r.count.map(|n| format!(" ({n} entries)")).unwrap_or_default();
    match query {
        "$everything" => (Verb { past: "downloaded", base: "download" }, format!("your whole record{n}")),
        "$summary" => (READ, "a summary of your record".into()),
        "export" => (Verb { past: "downloaded", base: "download" }, format!("your record as a file{n}")),
        "import" => (Verb { past: "imported", base: "import" }, format!("a record file into yours{n}")),
        q if q.starts_with("$export") => {
            (Verb { past: "included", base: "include" }, format!("your record in a bulk export{n}"))
        }
        q => (Verb { past: "ran", base: "run" }, format!("{q} on your record")),
    }
}

fn event(r: &AuditRow, names: &Names, query: &str) -> (Verb, String) {
    let grantee = || {
        let id = query.strip_prefix("Consent/").unwrap_or(query);
        names.grants.get(id).cloned().unwrap_or_else(|| "an app or provider".into())
    };
    let v = |past, base| Verb { past, base };
    match r.interaction.as_str() {
        "login" => (v("signed in", "sign in"), String::new()),
        "password-changed" => (v("changed", "change"), "your password".into()),
        "signed-out-everywhere" => (v("signed out", "sign out"), "on every device".into()),
        "account-closed" => (v("closed", "close"), "your login".into()),
        "invite" => (v("sent", "send"), "an invitation to set up your login".into()),
        "grant" => (v("shared", "share"), format!("your record with {}", grantee())),
        "grant-revoked" => (v("stopped", "stop"), format!("sharing your record with {}", grantee())),
        "grant-changed" => (v("changed", "change"), format!("what {} may see and do", grantee())),
        "federated-query" => {
            let source = query.rsplit_once(' ').map_or(query, |(s, _)| s);
            (v("asked", "ask"), format!("{source} for your record"))
        }
        other => (v("did", "do"), other.replace('-', " ")),
    }
}

fn sentence(v: Verb, rest: &str, allowed: bool) -> String {
    let verb = if allowed { v.past.to_string() } else { format!("tried to {}", v.base) };
    if rest.is_empty() {
        verb
    } else {
        format!("{verb} {rest}")
    }
}

/// What one audit row says alone (the CSV has one line per row).
pub(crate) fn row_words(r: &AuditRow, names: &Names) -> String {
    let (v, rest) = one(r, names);
    sentence(v, &rest, r.outcome == 0)
}

/// A run of rows told as one line, oldest first while it is built.
struct Draft<'a> {
    kind: Kind,
    main: Vec<&'a AuditRow>,
    /// Rows told as part of the line without words of their own (supporting reads, bookkeeping).
    with: Vec<&'a AuditRow>,
    /// The import that these writes were part of.
    import: Option<&'a AuditRow>,
    first: i64,
    last: i64,
}

impl<'a> Draft<'a> {
    fn new(r: &'a AuditRow) -> Self {
        Draft { kind: kind(r), main: vec![r], with: Vec::new(), import: None, first: r.recorded, last: r.recorded }
    }

    fn caller(&self) -> (Option<&'a str>, Option<&'a str>) {
        let r = self.main[0];
        (r.client_id.as_deref(), r.subject.as_deref())
    }

    fn allowed(&self) -> bool {
        self.main[0].outcome == 0
    }

    /// Takes `r` into this line when it continues it: the same caller, allowed, soon after.
    fn takes(&mut self, r: &'a AuditRow) -> bool {
        if r.outcome != 0 || !self.allowed() || (r.client_id.as_deref(), r.subject.as_deref()) != self.caller() {
            return false;
        }
        let gap = r.recorded - self.last;
        let ok = match (self.kind, kind(r)) {
            (Kind::Read | Kind::Support, Kind::Read | Kind::Support) => gap <= BURST_MICROS,
            (Kind::Write, Kind::Support) => gap <= BURST_MICROS,
            (Kind::Write, Kind::Write) => gap <= WRITE_MICROS && same_verb(r, self.main[0]),
            (Kind::Write, Kind::Operation) if r.query.as_deref() == Some("import") && self.import.is_none() => {
                gap <= IMPORT_MICROS
            }
            _ => false,
        };
        if !ok {
            return false;
        }
        match (self.kind, kind(r)) {
            (_, Kind::Operation) => self.import = Some(r),
            (Kind::Support, Kind::Read) => {
                // The line was supporting reads only: now it is about what they supported.
                self.with.append(&mut self.main);
                self.main.push(r);
                self.kind = Kind::Read;
            }
            (_, Kind::Support) => self.with.push(r),
            _ => self.main.push(r),
        }
        self.last = r.recorded;
        true
    }

    fn rows(&self) -> impl Iterator<Item = &'a AuditRow> + '_ {
        self.main.iter().chain(&self.with).chain(self.import.iter()).copied()
    }

    fn what(&self, names: &Names) -> String {
        if let Some(import) = self.import {
            let (v, rest) = one(import, names);
            return sentence(v, &rest, true);
        }
        let n = self.main.len();
        if n == 1 {
            return row_words(self.main[0], names);
        }
        match self.kind {
            Kind::Write => {
                let v = write_verb(self.main[0]);
                if n <= 3 {
                    let article = if v.past == "added" { "a" } else { "your" };
                    let items: Vec<String> = self.main.iter().map(|r| entry(r, names, article)).collect();
                    format!("{} {}", v.past, and_list(&items))
                } else {
                    let prep = match v.past {
                        "added" => "to",
                        "removed" => "from",
                        _ => "in",
                    };
                    format!("{} {n} entries {prep} your {}", v.past, self.topics())
                }
            }
            Kind::Support => {
                let mut what: Vec<String> = Vec::new();
                for r in &self.main {
                    let s = supporting(r.res_type.as_deref()).unwrap_or_default().to_string();
                    if !what.contains(&s) {
                        what.push(s);
                    }
                }
                format!("looked up {}, {n} times", and_list(&what))
            }
            _ => format!("read your {}, {n} times", self.topics()),
        }
    }

    fn topics(&self) -> String {
        let mut seen: Vec<String> = Vec::new();
        for r in &self.main {
            let t = topic(r);
            if !seen.contains(&t) {
                seen.push(t);
            }
        }
        and_list(&seen)
    }

    fn when(&self) -> String {
        if self.first == self.last {
            return minute(self.first);
        }
        let (a, b) = (minute(self.first), minute(self.last));
        match (a.split_once(", "), b.split_once(", ")) {
            (Some((day_a, time_a)), Some((day_b, time_b))) if day_a == day_b => {
                if time_a == time_b {
                    a
                } else {
                    format!("{day_a}, {time_a}–{time_b}")
                }
            }
            _ => format!("{a} – {b}"),
        }
    }

    fn said(self, names: &Names) -> Said {
        let mut rows: Vec<&AuditRow> = self.rows().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.aid));
        // Bookkeeping is the caller's, even where the line is the service's own.
        let speaker = self.main.iter().chain(self.import.iter()).find(|r| !bookkeeping(r)).unwrap_or(&self.main[0]);
        Said {
            when: self.when(),
            who: who(speaker, names),
            what: self.what(names),
            allowed: self.allowed(),
            aids: rows.iter().map(|r| r.aid).collect(),
            each: rows.iter().map(|r| (r.aid, row_words(r, names))).collect(),
        }
    }
}

/// The rows (newest first, as the log is read) told as lines, newest first.
pub(crate) fn tell(rows: &[AuditRow], names: &Names) -> Vec<Said> {
    let mut chronological: Vec<&AuditRow> = rows.iter().collect();
    chronological.sort_by_key(|r| (r.recorded, r.aid));
    let mut drafts: Vec<Draft> = Vec::new();
    let (kept, books): (Vec<&AuditRow>, Vec<&AuditRow>) =
        chronological.into_iter().partition(|r| !bookkeeping(r) || r.outcome != 0);
    // Each caller's latest line: a caller's reads continue across other callers' rows.
    let mut latest: HashMap<(Option<&str>, Option<&str>), usize> = HashMap::new();
    for r in kept {
        let caller = (r.client_id.as_deref(), r.subject.as_deref());
        if let Some(&i) = latest.get(&caller) {
            if drafts[i].takes(r) {
                continue;
            }
        }
        latest.insert(caller, drafts.len());
        drafts.push(Draft::new(r));
    }
    // The Provenance of a write belongs with that write (the writer's own line first: the
    // service's is about whoever wrote). Drafts are in the order they began: look only at the
    // few that began just before it (a CSV has up to 20,000 rows).
    let mut alone = Vec::new();
    for b in books {
        let caller = (b.client_id.as_deref(), b.subject.as_deref());
        let end = drafts.partition_point(|d| d.first <= b.recorded + WRITE_MICROS);
        let near = drafts[end.saturating_sub(64)..end]
            .iter_mut()
            .filter(|d| matches!(d.kind, Kind::Write) && d.allowed())
            .filter(|d| b.recorded <= d.last + IMPORT_MICROS)
            .min_by_key(|d| (d.caller() != caller, (b.recorded - d.last).abs()));
        match near {
            Some(d) => d.with.push(b),
            None => alone.push(Draft::new(b)),
        }
    }
    drafts.append(&mut alone);
    drafts.sort_by_key(|d| std::cmp::Reverse((d.last, d.main[0].aid)));
    drafts.into_iter().map(|d| d.said(names)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(aid: i64, at_secs: i64, client: &str, subject: &str, interaction: &str, rtype: Option<&str>) -> AuditRow {
        AuditRow {
            aid,
            id: format!("e{aid}"),
            recorded: 1_760_000_000_000_000 + at_secs * 1_000_000,
            patient_id: Some("p".into()),
            client_id: Some(client.into()),
            subject: Some(subject.into()),
            action: if is_write(interaction) { "C" } else { "R" }.into(),
            interaction: interaction.into(),
            res_type: rtype.map(str::to_string),
            res_id: Some(format!("id{aid}")),
            query: None,
            outcome: 0,
            detail: None,
            count: None,
        }
    }

    #[test]
    fn a_burst_of_reads_is_one_line_and_supporting_reads_add_nothing() {
        let rows = vec![
            row(4, 130, "app", "s", "read", Some("AllergyIntolerance")),
            row(3, 120, "app", "s", "read", Some("PractitionerRole")),
            row(2, 60, "app", "s", "read", Some("MedicationRequest")),
            row(1, 0, "app", "s", "read", Some("MedicationRequest")),
        ];
        let lines = tell(&rows, &Names::default());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].what, "read your medicines and allergies, 3 times");
        assert_eq!(lines[0].aids, vec![4, 3, 2, 1]);
    }

    #[test]
    fn a_gap_or_another_caller_makes_a_new_line() {
        let rows = vec![
            row(3, 1000, "app", "s", "read", Some("MedicationRequest")),
            row(2, 10, "other", "t", "read", Some("MedicationRequest")),
            row(1, 0, "app", "s", "read", Some("MedicationRequest")),
        ];
        assert_eq!(tell(&rows, &Names::default()).len(), 3);
    }

    #[test]
    fn the_services_provenance_of_a_write_is_the_writers() {
        let mut names = Names::default();
        names.entries.insert("MedicationStatement/id1".into(), "Ibuprofen 200mg tablets".into());
        let rows = vec![
            row(2, 0, "healthfolio-cli", "service:provenance", "create", Some("Provenance")),
            row(1, 0, "portal", "acct", "create", Some("MedicationStatement")),
        ];
        let lines = tell(&rows, &names);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].who, "You");
        assert_eq!(lines[0].what, "added a note that you take Ibuprofen 200mg tablets");
    }

    #[test]
    fn a_long_log_is_told_quickly() {
        // 20,000 rows (the CSV's most): writes by many callers, each with the service's Provenance.
        let rows: Vec<AuditRow> = (0..20_000)
            .map(|i| {
                let (client, subject) =
                    if i % 2 == 0 { ("healthfolio-cli", "service:provenance") } else { ("app", "s") };
                let mut r = row(i, (i | 1) * 7, client, subject, "create", Some("MedicationRequest"));
                if i % 2 == 0 {
                    r.res_type = Some("Provenance".into());
                }
                r.subject = Some(if i % 2 == 0 { subject.to_string() } else { format!("s{}", i % 300) });
                r
            })
            .collect();
        let started = std::time::Instant::now();
        let lines = tell(&rows, &Names::default());
        assert_eq!(lines.len(), 10_000, "one line per write, with its Provenance");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn refused_reads_stand_alone() {
        let mut refused = row(2, 10, "app", "s", "read", Some("Patient"));
        refused.outcome = 4;
        let rows = vec![refused, row(1, 0, "app", "s", "read", Some("Patient"))];
        let lines = tell(&rows, &Names::default());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].what, "tried to read your personal details");
        assert!(!lines[0].allowed);
    }
}
