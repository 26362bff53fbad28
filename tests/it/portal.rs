//! The patient portal in a (cookie-keeping, non-redirecting) browser over real HTTP, with the
//! FHIR API as the other side: what the portal writes, the API serves, and the other way round.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::{Client, TestApp};
use serde_json::{json, Value};

/// Signs `email` in at the portal; returns the browser and the home page.
pub fn sign_in(app: &TestApp, email: &str) -> (Browser, Page) {
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    assert_eq!(login.status, 200);
    let form = [("email", email), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    let r = b.post(&format!("{}/oauth/login", app.base), &form);
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/portal")));
    let home = b.get(&format!("{}/portal", app.base));
    (b, home)
}

/// A prescriber with a name, at an organisation (through a PractitionerRole); returns the reference.
fn prescriber(app: &TestApp) -> String {
    let org = app.create(json!({"resourceType": "Organization", "name": "Riverside Medical Practice"}));
    let dr = app.create(json!({"resourceType": "Practitioner",
        "name": [{"family": "Carter", "given": ["Helen"], "prefix": ["Dr"]}]}));
    app.create(json!({"resourceType": "PractitionerRole", "practitioner": {"reference": format!("Practitioner/{dr}")},
        "organization": {"reference": format!("Organization/{org}")}}));
    format!("Practitioner/{dr}")
}

fn dispense(patient: &str, request: &str, when: &str) -> Value {
    let (code, display) = SIMVASTATIN;
    json!({"resourceType": "MedicationDispense", "status": "completed", "subject": {"reference": format!("Patient/{patient}")},
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code, "display": display}]},
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{request}")}], "whenHandedOver": when})
}

fn patient_sees_medicines_from_the_api(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mut mr = medication_request(&p, code, display, "active", "2024-02-10");
    mr["requester"] = json!({"reference": prescriber(app)});
    // Structured dosage only: the portal says it in words.
    mr["dosageInstruction"] = json!([{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]);
    let mr_id = app.create(mr);
    app.create(dispense(&p, &mr_id, "2025-08-04T10:15:00Z"));
    app.create(dispense(&p, &mr_id, "2025-09-29T09:40:00Z"));
    app.create(allergy(&p, "high"));
    app.create(json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{p}")},
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Type 2 diabetes"}, "onsetDateTime": "2020-01-01"}));
    // A prescription naming its medicine through a Medication resource.
    let med = app.create(json!({"resourceType": "Medication", "code": {"coding": [{"system": "https://dmd.nhs.uk",
        "code": "323509004", "display": "Amoxicillin 500mg capsules"}]}}));
    app.create(json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "subject": {"reference": format!("Patient/{p}")}, "medicationReference": {"reference": format!("Medication/{med}")},
        "authoredOn": "2025-10-01"}));
    let (mut b, home) = sign_in(app, "ada@example.org");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("943 476 5919"), "NHS number as 3-3-4");
    assert!(home.body.contains("Amoxicillin 500mg capsules"), "named through its Medication: {}", home.body);
    assert!(home.body.contains("Simvastatin 40mg tablets"));
    assert!(home.body.contains("High risk \u{b7} Current"), "criticality and status in words: {}", home.body);
    let list = b.get(&format!("{}/portal/medicines", app.base));
    for want in [
        "1 tablet twice a day",
        "Dr Helen Carter",
        "Riverside Medical Practice",
        "Last dispensed <span class=\"date\">29 September 2025</span>",
        "from <span class=\"date\">10 February 2024</span>",
        "<td data-label=\"Status\">Current</td>",
    ] {
        assert!(list.body.contains(want), "{want} in {}", list.body);
    }
    let mut changed = app.client().get(&format!("MedicationRequest/{mr_id}")).body;
    changed["status"] = json!("on-hold");
    assert_eq!(app.client().put(&format!("MedicationRequest/{mr_id}"), &changed).status, 200);
    let detail = b.get(&format!("{}/portal/medicines/prescription/{mr_id}", app.base));
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(detail.body.contains(">Paused<") && detail.body.contains(">Current<"), "both versions, in words");
    assert!(detail.body.contains("Healthfolio (loaded by the service operator)"), "{}", detail.body);
    let problems = b.get(&format!("{}/portal/allergies", app.base));
    assert!(problems.body.contains("Type 2 diabetes") && problems.body.contains("<strong>High risk</strong>"));
    let print = b.get(&format!("{}/portal/print", app.base));
    assert!(print.body.contains("Current medicines of Ada Okafor"), "{}", print.body);
    assert_eq!(b.get(&format!("{}/portal/medicines/nonsense/{mr_id}", app.base)).status, 404);
}

fn patient_adds_and_stops_what_they_take(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (mut b, _) = sign_in(app, "ada@example.org");
    let form_page = b.get(&format!("{}/portal/medicines/add", app.base));
    let csrf = form_page.field("csrf");
    // The start date is three boxes, day, month and year (GOV.UK date input).
    assert!(form_page.body.contains("name=\"start-day\"") && !form_page.body.contains("type=\"date\""));
    let add = |b: &mut Browser, csrf: &str, start: &str| {
        let (d, rest) = start.split_once(' ').unwrap_or((start, ""));
        let (m, y) = rest.split_once(' ').unwrap_or((rest, ""));
        b.post(
            &format!("{}/portal/medicines/add", app.base),
            &[
                ("csrf", csrf),
                ("medicine", "329653008"),
                ("dose", "1 tablet when my back hurts"),
                ("start-day", d),
                ("start-month", m),
                ("start-year", y),
            ],
        )
    };
    let bad = add(&mut b, &csrf, "31 2 2025");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("The date you started taking it must be a real date"), "{}", bad.body);
    assert!(bad.body.contains("1 tablet when my back hurts") && bad.body.contains("value=\"31\""), "kept input");
    assert!(bad.body.contains("href=\"#start-day\""), "the summary links to the first box");
    assert!(bad.body.contains("id=\"start-error\""), "the message stands against the fieldset");
    let no_year = add(&mut b, &csrf, "1 10 ");
    assert_eq!(no_year.status, 400);
    assert!(no_year.body.contains("must include a year") && no_year.body.contains("href=\"#start-year\""));
    assert_eq!(no_year.body.matches("input-error").count(), 1, "only the year box is marked");
    let future = add(&mut b, &csrf, "1 1 2999");
    assert!(future.status == 400 && future.body.contains("must be today or in the past"), "{}", future.body);
    assert_eq!(add(&mut b, &csrf, "1 October 2025").status, 303);
    let api = app.client().get(&format!("MedicationStatement?patient={p}"));
    let st = &api.entries()[0]["resource"];
    assert_eq!(st["informationSource"]["reference"], format!("Patient/{p}"), "patient-reported");
    assert_eq!(st["medicationCodeableConcept"]["coding"][0]["code"], "329653008");
    let id = st["id"].as_str().expect("id").to_string();
    assert!(b.get(&format!("{}/portal/medicines", app.base)).body.contains("You said you take it"));
    let detail = b.get(&format!("{}/portal/medicines/taken/{id}", app.base));
    assert!(detail.body.contains("You, in the portal"), "author of version 1: {}", detail.body);
    assert!(detail.body.contains("Author: Ada Okafor"), "Provenance names the patient: {}", detail.body);
    // A medicine that is not in the list, in the patient's own words.
    let own_words = [
        ("csrf", csrf.as_str()),
        ("medicine", ""),
        ("other", "Vitamin D 1000 unit capsules"),
        ("dose", "1 a day"),
        ("start-day", "1"),
        ("start-month", "9"),
        ("start-year", "2025"),
    ];
    assert_eq!(b.post(&format!("{}/portal/medicines/add", app.base), &own_words).status, 303);
    assert!(b.get(&format!("{}/portal/medicines", app.base)).body.contains("Vitamin D 1000 unit capsules"));
    let nameless = [
        ("csrf", csrf.as_str()),
        ("medicine", ""),
        ("other", " "),
        ("dose", "1 a day"),
        ("start-day", "1"),
        ("start-month", "9"),
        ("start-year", "2025"),
    ];
    let refused = b.post(&format!("{}/portal/medicines/add", app.base), &nameless);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("write its name"), "{}", refused.body);
    // Without the session's CSRF token a form is refused, and nothing is written.
    assert_eq!(add(&mut b, "forged", "2025-10-01").status, 403);
    let no_token = b.post(&format!("{}/portal/medicines/{id}/stop", app.base), &[]);
    assert_eq!(no_token.status, 403);
    assert_eq!(
        app.client().get(&format!("MedicationStatement?patient={p}")).ids().len(),
        2,
        "the two added above, nothing more"
    );
    let stopped = b.post(&format!("{}/portal/medicines/{id}/stop", app.base), &[("csrf", &csrf)]);
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    let after = app.client().get(&format!("MedicationStatement/{id}")).body;
    assert_eq!(after["status"], "stopped");
    assert!(after["effectivePeriod"]["end"].is_string());
}

/// A provider system of `org` with a token for `system/*.rs`.
fn provider(app: &TestApp, org: &str) -> Client {
    app.client_with(Some(provider_system_token(app, org)))
}

fn grant_id(body: &str) -> String {
    let marker = "/portal/sharing/";
    let i = body.find(marker).expect("revoke form") + marker.len();
    body[i..i + body[i..].find('/').expect("id end")].to_string()
}

fn sharing_with_a_provider_and_stopping(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let org = "Organization/riverside";
    let provider = provider(app, org);
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 404, "not shared yet");
    let (mut b, _) = sign_in(app, "ada@example.org");
    let page = b.get(&format!("{}/portal/sharing", app.base));
    assert!(page.body.contains("Riverside GP system"));
    let csrf = page.field("csrf");
    let share = |b: &mut Browser, perms: &[&str], until: &str| {
        // Day, month and year boxes, from an ISO date here.
        let (y, md) = until.split_once('-').unwrap_or(("", ""));
        let (m, d) = md.split_once('-').unwrap_or(("", ""));
        let mut form = vec![("csrf", csrf.as_str()), ("organization", org)];
        form.extend([("until-day", d), ("until-month", m), ("until-year", y)]);
        form.extend(perms.iter().map(|p| ("permission", *p)));
        b.post(&format!("{}/portal/sharing", app.base), &form)
    };
    assert_eq!(share(&mut b, &[], "").status, 400, "nothing chosen");
    assert_eq!(share(&mut b, &["medicines-read"], "2001-01-01").status, 400, "expiry in the past");
    let no_such_day = share(&mut b, &["medicines-read"], "2099-02-30");
    assert_eq!(no_such_day.status, 400);
    assert!(no_such_day.body.contains("The date sharing ends must be a real date"), "{}", no_such_day.body);
    let shared = share(&mut b, &["medicines-read"], "2099-12-31");
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert!(
        shared.body.contains("See your prescriptions") && shared.body.contains("31 December 2099"),
        "{}",
        shared.body
    );
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200, "shared");
    assert_eq!(provider.get(&format!("Patient/{p}")).status, 404, "only what was chosen");
    let stopped = b.post(&format!("{}/portal/sharing/{}/revoke", app.base, grant_id(&shared.body)), &[("csrf", &csrf)]);
    assert!(stopped.body.contains("Access ended"), "{}", stopped.body);
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 404, "refused on the very next call");
    let log = b.get(&format!("{}/portal/access-log", app.base));
    assert!(log.body.contains(&format!("Read your prescription for {display}")), "the provider's read: {}", log.body);
    assert!(log.body.contains("Riverside GP system"));
    assert!(log.body.contains("Refused") && log.body.contains("Allowed"));
    assert!(log.body.contains("Shared your record") && log.body.contains("Stopped sharing"));
    let csv = b.get(&format!("{}/portal/access-log.csv", app.base));
    assert!(csv.body.starts_with("when,who,what,outcome,") && csv.body.contains("Riverside GP system"));
    let none = b.get(&format!("{}/portal/access-log?from=2001-01-01&to=2001-12-31", app.base));
    assert!(none.body.contains("Nothing is recorded for this period"));
    assert_eq!(b.get(&format!("{}/portal/access-log?from=soon", app.base)).status, 400);
    // The period's dates as day, month and year boxes; the CSV link carries them as dates.
    let typed = "from-day=1&from-month=1&from-year=2001&to-day=31&to-month=12&to-year=2001";
    let none = b.get(&format!("{}/portal/access-log?{typed}", app.base));
    assert!(none.body.contains("Nothing is recorded for this period"), "{}", none.body);
    assert!(none.body.contains("access-log.csv?from=2001-01-01&amp;to=2001-12-31"), "{}", none.body);
    let bad = b.get(&format!("{}/portal/access-log?from-day=30&from-month=2&from-year=2025", app.base));
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("The start of the period must be a real date") && bad.body.contains("value=\"30\""));
    assert!(bad.body.contains("id=\"from-error\"") && !bad.body.contains("id=\"to-error\""), "against its boxes");
}

/// The sharing page: last use from the audit trail, and changing what a provider may do (the
/// very next request follows the change); the access log filtered by who.
fn sharing_changes_and_the_log_by_who(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let org = "Organization/riverside";
    let provider = provider(app, org);
    let (mut b, _) = sign_in(app, "ada@example.org");
    let page = b.get(&format!("{}/portal/sharing", app.base));
    let csrf = page.field("csrf");
    let form = [("csrf", csrf.as_str()), ("organization", org), ("permission", "medicines-read")];
    let shared = b.post(&format!("{}/portal/sharing", app.base), &form);
    assert!(shared.body.contains("Last used</dt><dd><span class=\"date\">not yet"), "{}", shared.body);
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200);
    assert_eq!(provider.get(&format!("Patient/{p}")).status, 404);
    app.hf.store.audit.flush();
    let page = b.get(&format!("{}/portal/sharing", app.base));
    assert!(
        !page.body.contains("Last used</dt><dd><span class=\"date\">not yet"),
        "the provider's read counts: {}",
        page.body
    );
    // Change: personal details too, medicines no longer.
    let id = grant_id(&page.body);
    let change = [
        ("csrf", csrf.as_str()),
        ("until-day", "31"),
        ("until-month", "1"),
        ("until-year", "2099"),
        ("permission", "details-read"),
    ];
    let changed = b.post(&format!("{}/portal/sharing/{id}/change", app.base), &change);
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert!(changed.body.contains("Changed."), "{}", changed.body);
    assert!(changed.body.contains("31 January 2099"), "{}", changed.body);
    assert!(
        changed.body.contains("name=\"until-year\" type=\"text\" inputmode=\"numeric\" maxlength=\"4\" value=\"2099\""),
        "the change form holds the date: {}",
        changed.body
    );
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 404, "medicines no longer shared");
    assert_eq!(provider.get(&format!("Patient/{p}")).status, 200, "details now shared");
    let none = b.post(&format!("{}/portal/sharing/{}/change", app.base, grant_id(&changed.body)), &[("csrf", &csrf)]);
    assert_eq!(none.status, 400, "nothing chosen is refused: {}", none.body);

    // The access log by who: only the provider's lines.
    let log = b.get(&format!("{}/portal/access-log", app.base));
    assert!(log.body.contains("<option value=\"portal\""), "the patient is one of the actors: {}", log.body);
    let client = log
        .body
        .split("<option value=\"")
        .skip(1)
        .filter_map(|o| o.split('"').next())
        .find(|v| !v.is_empty() && *v != "portal" && *v != "operator")
        .expect("the provider as an actor")
        .to_string();
    let theirs = b.get(&format!("{}/portal/access-log?who={client}", app.base));
    assert!(
        theirs.body.contains("Riverside GP system")
            && theirs.body.contains(&format!("Read your prescription for {display}"))
    );
    assert!(!theirs.body.contains("<td data-label=\"Who\">You"), "{}", theirs.body);
    assert!(theirs.body.contains("Refused: "), "the refused read after the change is there");
}

/// Home: from the second visit, what others added or changed since the last one, and how often
/// apps and providers used the record.
fn home_shows_what_is_new_since_last_visit(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (_, first) = sign_in(app, "ada@example.org");
    assert!(!first.body.contains("New since your last visit"), "not on the first visit");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-06-01"));
    let reader = app.client_with(Some(app.patient_token("patient/*.rs", &p)));
    assert_eq!(reader.get(&format!("MedicationRequest/{mr}")).status, 200);
    app.hf.store.audit.flush();
    let (_, second) = sign_in(app, "ada@example.org");
    assert!(second.body.contains("New since your last visit"), "{}", second.body);
    assert!(second.body.contains(&format!("Prescription added: {display}")), "{}", second.body);
    assert!(second.body.contains("used your record"), "{}", second.body);
    let (_, third) = sign_in(app, "ada@example.org");
    assert!(third.body.contains("Nobody else added or changed anything"), "{}", third.body);
}

fn one_patient_never_sees_another(app: &TestApp) {
    let ada = patient_with_login(app, NHS[0], "ada@example.org");
    let ben = app.create(patient(NHS[1], "Hughes", "Ben"));
    {
        let mut conn = app.hf.db.conn().expect("conn");
        let who = format!("Patient/{ben}");
        healthfolio::auth::accounts::create(&mut conn, "patient", "ben@example.org", PASSWORD, &who, None)
            .expect("account");
    }
    let (code, display) = SIMVASTATIN;
    let adas = app.create(medication_request(&ada, code, display, "active", "2024-02-10"));
    let org = "Organization/riverside";
    let provider = provider(app, org);
    let grant =
        app.grant(&ada, healthfolio::consent::Grantee::Organization(org.into()), "patient/MedicationRequest.rs");
    let (mut b, home) = sign_in(app, "ben@example.org");
    assert!(home.body.contains("Ben Hughes") && !home.body.contains("Simvastatin"));
    assert!(!b.get(&format!("{}/portal/medicines", app.base)).body.contains("Simvastatin"));
    assert_eq!(b.get(&format!("{}/portal/medicines/prescription/{adas}", app.base)).status, 404);
    assert!(!b.get(&format!("{}/portal/sharing", app.base)).body.contains(&grant), "not Ada's grants");
    let csrf = home.field("csrf");
    let stop = b.post(&format!("{}/portal/sharing/{grant}/revoke", app.base), &[("csrf", &csrf)]);
    assert_eq!(stop.status, 404, "Ben cannot end Ada's sharing");
    assert_eq!(provider.get(&format!("MedicationRequest/{adas}")).status, 200, "Ada's grant still holds");
    let stop_hers = b.post(&format!("{}/portal/medicines/{adas}/stop", app.base), &[("csrf", &csrf)]);
    assert_eq!(stop_hers.status, 404);
    assert!(!b.get(&format!("{}/portal/access-log", app.base)).body.contains(&adas));
}

fn portal_needs_a_session_and_signs_out(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let mut anon = Browser::default();
    for path in ["/portal", "/portal/medicines", "/portal/sharing", "/portal/access-log.csv", "/portal/account"] {
        let r = anon.get(&format!("{}{path}", app.base));
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/portal/login")), "{path}");
    }
    let (mut b, home) = sign_in(app, "ada@example.org");
    assert_eq!(b.post(&format!("{}/portal/logout", app.base), &[("csrf", "forged")]).status, 403);
    let out = b.post(&format!("{}/portal/logout", app.base), &[("csrf", &home.field("csrf"))]);
    assert_eq!(out.status, 303);
    assert_eq!(b.get(&format!("{}/portal", app.base)).status, 303, "the session has ended");
}

fn account_changes_password_and_signs_out_everywhere(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (mut one, _) = sign_in(app, "ada@example.org");
    let (mut two, _) = sign_in(app, "ada@example.org");
    let page = one.get(&format!("{}/portal/account", app.base));
    assert!(page.body.contains("ada@example.org") && page.body.contains("this browser"), "{}", page.body);
    assert!(page.body.contains("No app is connected"), "{}", page.body);
    app.grant(&p, healthfolio::consent::Grantee::Client(public_app(app)), "patient/MedicationRequest.rs");
    let page = one.get(&format!("{}/portal/account", app.base));
    assert!(page.body.contains("Connected apps") && page.body.contains("Pill Pal"), "{}", page.body);
    let csrf = page.field("csrf");
    let change = |b: &mut Browser, current: &str, new: &str| {
        b.post(
            &format!("{}/portal/account/password", app.base),
            &[("csrf", csrf.as_str()), ("current", current), ("new", new), ("confirm", new)],
        )
    };
    let wrong = change(&mut one, "not my password", "a much longer passphrase");
    assert!(wrong.status == 400 && wrong.body.contains("current password is not right"));
    assert_eq!(change(&mut one, PASSWORD, "short").status, 400);
    let ok = change(&mut one, PASSWORD, "a much longer passphrase");
    assert!(ok.status == 200 && ok.body.contains("password has been changed"), "{}", ok.body);
    let out = one.post(&format!("{}/portal/account/sign-out-everywhere", app.base), &[("csrf", &csrf)]);
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/portal/login")));
    assert_eq!(one.get(&format!("{}/portal", app.base)).status, 303);
    assert_eq!(two.get(&format!("{}/portal", app.base)).status, 303, "the other browser too");
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    let form = [
        ("email", "ada@example.org"),
        ("password", "a much longer passphrase"),
        ("csrf", &login.field("csrf")),
        ("continue", "/portal"),
    ];
    assert_eq!(b.post(&format!("{}/oauth/login", app.base), &form).status, 303, "the new password works");
}

/// A prescription and the patient's "I take it" of the same medicine: one entry naming both, on
/// every page that lists medicines; another medicine stays its own entry.
fn one_entry_per_medicine(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let mut mr = medication_request(&p, code, display, "active", "2025-03-03");
    mr["requester"] = json!({"reference": prescriber(app)});
    let mr_id = app.create(mr);
    app.create(dispense(&p, &mr_id, "2025-03-10T09:00:00Z"));
    let statement = |extra: Value| {
        let mut s = json!({"resourceType": "MedicationStatement", "status": "active",
            "subject": {"reference": format!("Patient/{p}")}, "informationSource": {"reference": format!("Patient/{p}")},
            "effectiveDateTime": "2025-04-01"});
        s.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        app.create(s)
    };
    // The same code, and (by name only) a statement that says which prescription it follows.
    let coded = statement(json!({"medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
        "code": code, "display": display}]}}));
    let linked = statement(json!({"medicationCodeableConcept": {"text": "Zocor"},
        "basedOn": [{"reference": format!("MedicationRequest/{mr_id}")}]}));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-01"));
    let (mut b, home) = sign_in(app, "ada@example.org");
    let pages = [
        ("home", home.body),
        ("medicines", b.get(&format!("{}/portal/medicines", app.base)).body),
        ("timeline", b.get(&format!("{}/portal/timeline", app.base)).body),
        ("print", b.get(&format!("{}/portal/print", app.base)).body),
    ];
    for (page, body) in &pages {
        let named = |name: &str| {
            let entry = match *page {
                "home" => format!("<strong>{name}</strong>"),
                "medicines" => format!(">{name}</a></th>"),
                _ => format!("<th scope=\"row\">{name}</th>"),
            };
            body.matches(&entry).count()
        };
        assert_eq!(named(SIMVASTATIN.1), 1, "one Simvastatin entry on {page}: {body}");
        assert_eq!(named(PARACETAMOL.1), 1, "Paracetamol is its own entry on {page}: {body}");
        assert!(!body.contains(">Zocor<"), "the linked statement joins its prescription on {page}");
        assert!(
            body.contains(
                "Prescribed by Dr Helen Carter (Riverside Medical Practice), <span class=\"date\">3 March 2025</span>"
            ),
            "the prescription on {page}: {body}"
        );
        let said = if *page == "print" { "The patient said they take it" } else { "You said you take it" };
        assert_eq!(body.matches(said).count(), 2, "both statements on {page}: {body}");
    }
    let list = &pages[1].1;
    assert!(list.contains("Last dispensed <span class=\"date\">10 March 2025</span>"), "{list}");
    for link in [format!("prescription/{mr_id}"), format!("taken/{coded}"), format!("taken/{linked}")] {
        assert!(list.contains(&format!("/portal/medicines/{link}\"")), "a link to {link}: {list}");
    }
    assert_eq!(pages[2].1.matches("<rect").count(), 4, "a bar per medicine in each of the two drawings");
}

both!(
    one_entry_per_medicine,
    sharing_changes_and_the_log_by_who,
    home_shows_what_is_new_since_last_visit,
    patient_sees_medicines_from_the_api,
    patient_adds_and_stops_what_they_take,
    sharing_with_a_provider_and_stopping,
    one_patient_never_sees_another,
    portal_needs_a_session_and_signs_out,
    account_changes_password_and_signs_out_everywhere
);

/// A long record is shown whole: more prescriptions than one page of the store's search.
#[test]
fn a_long_record_is_listed_whole() {
    let app = TestApp::sqlite();
    let p = patient_with_login(&app, NHS[0], "ada@example.org");
    let (code, display) = PARACETAMOL;
    let entries: Vec<Value> = (0..1005)
        .map(|_| {
            json!({"resource": medication_request(&p, code, display, "completed", "2020-01-01"),
                   "request": {"method": "POST", "url": "MedicationRequest"}})
        })
        .collect();
    let tx = app.client().post("", &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}));
    assert_eq!(tx.status, 200, "{}", tx.text);
    let (mut b, _) = sign_in(&app, "ada@example.org");
    let list = b.get(&format!("{}/portal/medicines", app.base));
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body.matches(r#"class="source" href="/portal/medicines/prescription/"#).count(),
        1005,
        "every prescription listed"
    );
}
