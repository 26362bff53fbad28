//! The access log in the patient's words (issue 15, item 3): who (organisation and person, app,
//! "You"), what ("read your medicines", "added a prescription for …"), when in UK time, a burst
//! of reads as one line, the patient's own views hidden unless asked for, refusals marked, and
//! the CSV keeping every row.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::portal::sign_in;
use crate::support::TestApp;
use healthfolio::consent::Grantee;
use healthfolio::db::{Bind, Sql};
use serde_json::json;

/// One line of the log page as the patient reads it.
#[derive(Debug, Clone)]
struct Line {
    when: String,
    who: String,
    what: String,
    outcome: String,
}

fn cell(row: &str, label: &str) -> String {
    let open = format!("<td data-label=\"{label}\">");
    let Some(start) = row.find(&open) else { return String::new() };
    let rest = &row[start + open.len()..];
    let text = &rest[..rest.find("</td>").unwrap_or(rest.len())];
    text.replace("<strong>", "").replace("</strong>", "").replace("&#x27;", "'").replace("&amp;", "&")
}

/// The table rows of an access-log page.
fn lines(body: &str) -> Vec<Line> {
    let Some(start) = body.find("<tbody>") else { return Vec::new() };
    let table = &body[start..body.find("</tbody>").unwrap_or(body.len())];
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            let when =
                row.split("<span class=\"date\">").nth(1).and_then(|t| t.split("</span>").next()).unwrap_or_default();
            Line {
                when: when.to_string(),
                who: cell(row, "Who"),
                what: cell(row, "What"),
                outcome: cell(row, "Outcome"),
            }
        })
        .collect()
}

fn find<'a>(lines: &'a [Line], what: &str) -> &'a Line {
    lines.iter().find(|l| l.what == what).unwrap_or_else(|| panic!("no line \"{what}\" in {lines:#?}"))
}

/// A provider organisation with a name, its GP system, and the patient's grant of `scope` to it.
fn riverside(app: &TestApp, patient: &str, scope: &str) -> crate::support::Client {
    let org = app.create(json!({"resourceType": "Organization", "name": "Riverside Medical Practice"}));
    let org_ref = format!("Organization/{org}");
    app.grant(patient, Grantee::Organization(org_ref.clone()), scope);
    app.client_with(Some(provider_system_token_with(app, &org_ref, "system/*.cruds")))
}

fn account_of(app: &TestApp, email: &str) -> String {
    let mut conn = app.hf.db.conn().expect("conn");
    healthfolio::auth::accounts::by_email(&mut conn, email).expect("query").expect("account").id
}

/// Who: the organisation (with its system), the patient's own app as "You, through …", the
/// patient in the portal as "You"; what: in words, named from the record; the Provenance the
/// service writes about a write is part of that write, never "the service operator added …".
fn the_log_says_who_did_what(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let provider = riverside(app, &p, "patient/MedicationRequest.cruds patient/Provenance.rs");
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200);
    let (pcode, pdisplay) = PARACETAMOL;
    let created = provider.post("MedicationRequest", &medication_request(&p, pcode, pdisplay, "active", "2025-02-01"));
    assert_eq!(created.status, 201, "{}", created.text);
    let new_id = created.body["id"].as_str().expect("id").to_string();
    // The provider reads the Provenance of its own write: supporting, not a line of its own.
    let prov = app.client().get(&format!("Provenance?target=MedicationRequest/{new_id}"));
    let prov_id = prov.ids().first().cloned().expect("the service wrote a Provenance");
    assert_eq!(provider.get(&format!("Provenance/{prov_id}")).status, 200);

    // The patient's own app, with a token naming the patient's own account.
    let pill_pal = public_app(app);
    app.grant(&p, Grantee::Client(pill_pal.clone()), "patient/AllergyIntolerance.rs");
    let account = account_of(app, "ada@example.org");
    let token =
        app.hf.issue_token(&account, &pill_pal, "patient/AllergyIntolerance.rs", Some(p.clone()), 600).expect("token");
    assert_eq!(app.client_with(Some(token)).get(&format!("Patient/{p}/AllergyIntolerance")).status, 200);

    // The patient adds a medicine in the portal.
    let (mut b, home) = sign_in(app, "ada@example.org");
    let form = [
        ("csrf", home.field("csrf")),
        ("medicine", String::new()),
        ("other", "Vitamin D 1000 unit capsules".into()),
        ("dose", "1 a day".into()),
        ("start-day", "1".into()),
        ("start-month", "9".into()),
        ("start-year", "2025".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(b.post(&format!("{}/portal/medicines/add", app.base), &form).status, 303);

    let page = b.get(&format!("{}/portal/access-log", app.base));
    assert_eq!(page.status, 200, "{}", page.body);
    let log = lines(&page.body);
    let riverside = "Riverside Medical Practice (Riverside GP system)";
    let read = find(&log, &format!("Read your prescription for {display}"));
    assert_eq!(read.who, riverside);
    assert_eq!(find(&log, &format!("Added a prescription for {pdisplay}")).who, riverside);
    assert_eq!(find(&log, "Searched your allergies (none found)").who, "You, through Pill Pal");
    assert_eq!(find(&log, "Added a note that you take Vitamin D 1000 unit capsules").who, "You");
    assert_eq!(find(&log, "Signed in").who, "You");
    assert_eq!(find(&log, &format!("Added a prescription for {display}")).who, "Healthfolio (service operator)");
    for l in &log {
        assert!(!l.what.contains("Provenance") && !l.what.contains("came from"), "a line of its own: {l:?}");
        assert!(!l.what.contains('/'), "no raw references: {l:?}");
        assert!(l.who != "Healthfolio" && !l.what.starts_with("Recorded"), "bookkeeping as a line: {l:?}");
    }
    // Exactly one line for the provider's read and its supporting Provenance read.
    assert_eq!(log.iter().filter(|l| l.who == riverside).count(), 2, "{log:#?}");
    assert!(page.body.contains("(UK time)") && !page.body.contains("UTC"), "times in the UK's clock");
}

/// Reads by one caller close together are one line with a count and a time range; the
/// patient's own views are hidden unless the filter asks for them; the CSV keeps every row.
fn bursts_own_views_and_the_csv(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    app.create(allergy(&p, "high"));
    let provider = riverside(app, &p, "patient/MedicationRequest.rs patient/AllergyIntolerance.rs");
    for _ in 0..3 {
        assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200);
    }
    assert_eq!(provider.get(&format!("Patient/{p}/AllergyIntolerance")).status, 200);
    // A search naming the patient by parameter (no patient in the provider's token) is theirs too.
    assert_eq!(provider.get(&format!("MedicationRequest?patient=Patient/{p}")).status, 200);
    let (mut b, _) = sign_in(app, "ada@example.org");
    assert_eq!(b.get(&format!("{}/portal/medicines", app.base)).status, 200);
    assert_eq!(b.get(&format!("{}/portal/allergies", app.base)).status, 200);

    let page = b.get(&format!("{}/portal/access-log", app.base));
    let log = lines(&page.body);
    let burst = find(&log, "Read your medicines and allergies, 5 times");
    assert_eq!(burst.who, "Riverside Medical Practice (Riverside GP system)");
    assert!(burst.when.contains(", "), "a day and a time: {burst:?}");
    assert!(
        !log.iter().any(|l| l.what.starts_with("Read your prescription")),
        "the single reads are inside the burst: {log:#?}"
    );
    let own = |l: &&Line| l.who == "You" && (l.what.starts_with("Read") || l.what.starts_with("Searched"));
    assert_eq!(log.iter().filter(own).count(), 0, "own views hidden by default: {log:#?}");
    assert!(page.body.contains("name=\"own\"") && !page.body.contains(" checked>"), "the filter, unticked");

    let with_own = b.get(&format!("{}/portal/access-log?own=yes", app.base));
    assert!(with_own.body.contains(" checked>"), "the filter stays ticked");
    let all = lines(&with_own.body);
    assert!(all.iter().any(|l| own(&l)), "own views shown on request: {all:#?}");
    assert!(with_own.body.contains("own=yes"), "the CSV link and next page keep the filter");

    // The CSV: one line per audit row, own views included, in words plus the raw fields.
    app.hf.store.audit.flush();
    let rows = {
        let mut conn = app.hf.db.conn().expect("conn");
        let q = healthfolio::audit::AuditQuery { patient: Some(p.clone()), limit: 100_000, ..Default::default() };
        healthfolio::audit::search_audit_events(&mut conn, &q).expect("rows")
    };
    let csv = b.get(&format!("{}/portal/access-log.csv", app.base));
    assert!(csv.body.starts_with("when,who,what,outcome,recorded_utc,"), "{}", csv.body);
    let data: Vec<&str> = csv.body.lines().skip(1).collect();
    assert_eq!(data.len(), rows.len(), "every row: {}", csv.body);
    let single = format!("\"Read your prescription for {display}\"");
    assert_eq!(data.iter().filter(|l| l.contains(&single)).count(), 3, "each read its own line: {}", csv.body);
    assert!(
        data.iter().any(|l| l.contains("\"You\"") && l.contains("\"portal\"") && l.contains("\"search-type\"")),
        "own views, with raw fields: {}",
        csv.body
    );
}

/// Reads of `MedicationRequest/{mr}` by `client` as the audit would have recorded them at `times`
/// (microseconds): the log's history, without waiting for it.
fn recorded_reads(app: &TestApp, patient: &str, client: &str, mr: &str, times: &[i64]) {
    let mut conn = app.hf.db.conn().expect("conn");
    for t in times {
        let q = Sql::with(
            "INSERT INTO audit_events (id, recorded, patient_id, client_id, subject, action, interaction, \
             res_type, res_id, outcome) VALUES (?, ?, ?, ?, ?, 'R', 'read', 'MedicationRequest', ?, 0)",
            [
                Bind::Text(uuid::Uuid::new_v4().to_string()),
                Bind::Int(*t),
                Bind::Text(patient.into()),
                Bind::Text(client.into()),
                Bind::Text("someone".into()),
                Bind::Text(mr.into()),
            ],
        );
        conn.execute(&q).expect("insert");
    }
}

/// Times are the clocks in England: a burst across the start of British Summer Time reads
/// 00:58–02:01; a summer afternoon is an hour ahead of UTC.
fn times_are_uk_local_across_summer_time(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let pill_pal = public_app(app);
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time").timestamp_micros();
    let times: Vec<i64> = ["2025-03-30T00:58:00Z", "2025-03-30T01:01:00Z", "2025-07-01T12:00:00Z"].map(at).into();
    recorded_reads(app, &p, &pill_pal, &mr, &times);
    let (mut b, _) = sign_in(app, "ada@example.org");
    let page = b.get(&format!("{}/portal/access-log?from=2025-03-01&to=2025-07-31", app.base));
    let log = lines(&page.body);
    assert_eq!(log.len(), 2, "{log:#?}");
    let spring = find(&log, "Read your medicines, 2 times");
    assert_eq!(spring.when, "30 March 2025, 00:58–02:01");
    assert_eq!(spring.who, "Pill Pal");
    let summer = find(&log, &format!("Read your prescription for {display}"));
    assert_eq!(summer.when, "1 July 2025, 13:00");
}

/// A refused access stays visible and marked, never folded into a burst; home names the
/// accesses since the last visit in the same words.
fn refusals_are_marked_and_home_uses_the_words(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let (_, first) = sign_in(app, "ada@example.org");
    assert_eq!(first.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let provider = riverside(app, &p, "patient/MedicationRequest.rs");
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200);
    assert_eq!(provider.get(&format!("Patient/{p}")).status, 404, "not shared");
    assert_eq!(provider.get(&format!("Patient/{p}")).status, 404, "not shared");
    app.hf.store.audit.flush();

    let (mut b, home) = sign_in(app, "ada@example.org");
    let riverside = "Riverside Medical Practice (Riverside GP system)";
    assert!(
        home.body.contains(&format!("<strong>{riverside}</strong>: Read your prescription for {display}")),
        "{}",
        home.body
    );
    assert!(home.body.contains("Tried to read your personal details"), "{}", home.body);
    assert!(!home.body.contains("UTC"), "{}", home.body);

    let page = b.get(&format!("{}/portal/access-log", app.base));
    let log = lines(&page.body);
    let refused: Vec<&Line> = log.iter().filter(|l| l.what == "Tried to read your personal details").collect();
    assert_eq!(refused.len(), 2, "one line each, not a burst: {log:#?}");
    assert!(refused.iter().all(|l| l.outcome.starts_with("Refused") && l.who == riverside), "{refused:#?}");
    assert!(page.body.contains("<strong>Refused"), "marked");
    assert_eq!(find(&log, &format!("Read your prescription for {display}")).outcome, "Allowed");
}

/// A burst longer than a page goes on on the next page; following "Older entries" shows every
/// read once, and another caller's reads stay their own line.
fn long_bursts_page_without_losing_reads(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let (a, b_app) = (public_app(app), confidential_app(app).0);
    let start = chrono::DateTime::parse_from_rfc3339("2025-05-01T09:00:00Z").expect("time").timestamp_micros();
    let second = 1_000_000;
    let busy: Vec<i64> = (0..505).map(|i| start + i * second).collect();
    recorded_reads(app, &p, &a, &mr, &busy);
    let later: Vec<i64> = (0..5).map(|i| start + (3000 + i) * second).collect();
    recorded_reads(app, &p, &b_app, &mr, &later);
    let (mut browser, _) = sign_in(app, "ada@example.org");
    let mut url = format!("{}/portal/access-log?from=2025-05-01&to=2025-05-01", app.base);
    let mut seen: Vec<Line> = Vec::new();
    for _ in 0..10 {
        let page = browser.get(&url);
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(lines(&page.body));
        let Some(i) = page.body.find("&amp;before=") else { break };
        let before: String = page.body[i + 12..].chars().take_while(char::is_ascii_digit).collect();
        url = format!("{}/portal/access-log?from=2025-05-01&to=2025-05-01&who=&own=&before={before}", app.base);
    }
    let times = |l: &Line| {
        l.what
            .strip_prefix("Read your medicines, ")
            .and_then(|t| t.strip_suffix(" times"))
            .map_or(1, |n| n.parse::<usize>().expect("a count"))
    };
    let by = |who: &str| seen.iter().filter(|l| l.who == who).map(times).sum::<usize>();
    assert_eq!(by("Pill Pal"), 505, "{seen:#?}");
    assert_eq!(by("Clinic Companion"), 5, "{seen:#?}");
    assert!(seen.len() <= 4, "bursts, not rows: {seen:#?}");
}

/// A record file the patient brings is one line, theirs: not an "added" per entry, and not the
/// service's Provenance of each entry as the operator's.
fn an_import_is_one_line_of_the_patients(app: &TestApp) {
    let source = TestApp::sqlite();
    let theirs = source.create(crate::fixtures::patient(NHS[0], "Okafor", "Ada"));
    for (code, display) in [PARACETAMOL, SIMVASTATIN] {
        source.create(medication_request(&theirs, code, display, "active", "2025-01-02"));
    }
    source.create(allergy(&theirs, "high"));
    let mut file = Vec::new();
    let operator = healthfolio::auth::AccessContext::operator("test");
    healthfolio::portability::archive::export(&source.hf.store, &operator, &theirs, &mut file).expect("export");

    patient_with_login(app, NHS[0], "ada@example.org");
    let (mut b, _) = sign_in(app, "ada@example.org");
    let csrf = b.get(&format!("{}/portal/record", app.base)).field("csrf");
    let done = b.post_file(&format!("{}/portal/record/import", app.base), &[("csrf", &csrf)], "archive", &file);
    assert_eq!(done.status, 200, "{}", done.body);

    let log = lines(&b.get(&format!("{}/portal/access-log", app.base)).body);
    let import = log.iter().find(|l| l.what.starts_with("Imported a record file into yours")).expect("the import");
    assert_eq!(import.who, "You", "{log:#?}");
    assert!(import.what.ends_with(" entries)"), "how many: {log:#?}");
    assert!(log.len() <= 3, "signed in, created the record, the import: {log:#?}");
    for l in &log {
        assert!(!l.what.contains("Provenance") && !l.what.contains("came from"), "{log:#?}");
        assert!(!(l.who == "You" && l.what.starts_with("Added")), "each entry as a line: {log:#?}");
        assert!(!l.who.starts_with("Healthfolio") || l.what == "Created your record", "{log:#?}");
    }
}

both!(
    an_import_is_one_line_of_the_patients,
    long_bursts_page_without_losing_reads,
    the_log_says_who_did_what,
    bursts_own_views_and_the_csv,
    times_are_uk_local_across_summer_time,
    refusals_are_marked_and_home_uses_the_words,
);
