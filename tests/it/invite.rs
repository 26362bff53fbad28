//! First sign-in by a one-time invitation.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;

fn invitation_creates_the_login_once(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let code = healthfolio::auth::invitations::invite(&mut app.hf.db.conn().expect("conn"), &p).expect("invite");
    let url = format!("{}/portal/invite/{code}", app.base);
    let mut b = Browser::default();
    let form = b.get(&url);
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.field("csrf");
    let mismatch = b.post(
        &url,
        &[("csrf", &csrf), ("email", "ada@example.org"), ("password", PASSWORD), ("confirm", "something else")],
    );
    assert_eq!(mismatch.status, 400);
    let form = b.get(&url);
    let done = b.post(
        &url,
        &[("csrf", &form.field("csrf")), ("email", "ada@example.org"), ("password", PASSWORD), ("confirm", PASSWORD)],
    );
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/portal")), "{}", done.body);
    let home = b.get(&format!("{}/portal", app.base));
    assert_eq!(home.status, 200);
    assert!(home.body.contains("943 476 5919"), "signed in to the invited record");
    // Spent: the link does nothing a second time.
    assert_eq!(Browser::default().get(&url).status, 404);
    assert_eq!(Browser::default().get(&format!("{}/portal/invite/not-a-code", app.base)).status, 404);
}

/// An operator-issued reset link sets a new password once, ends every session, and signs in.
fn reset_link_sets_a_new_password(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let mut elsewhere = Browser::default();
    let login = elsewhere.get(&format!("{}/portal/login", app.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    assert_eq!(elsewhere.post(&format!("{}/oauth/login", app.base), &form).status, 303);
    assert_eq!(elsewhere.get(&format!("{}/portal", app.base)).status, 200);

    let code = healthfolio::auth::invitations::reset_link(&mut app.hf.db.conn().expect("conn"), "ada@example.org")
        .expect("reset link");
    let url = format!("{}/portal/reset/{code}", app.base);
    let mut b = Browser::default();
    let page = b.get(&url);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Choose a new password") && !page.body.contains("name=\"email\""));
    let new = "a brand new passphrase";
    let short = b.post(&url, &[("csrf", &page.field("csrf")), ("password", "short"), ("confirm", "short")]);
    assert_eq!(short.status, 400, "{}", short.body);
    assert!(short.body.contains("A password needs at least 10 characters"), "{}", short.body);
    let page = b.get(&url);
    let done = b.post(&url, &[("csrf", &page.field("csrf")), ("password", new), ("confirm", new)]);
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/portal")), "{}", done.body);
    assert_eq!(b.get(&format!("{}/portal", app.base)).status, 200, "signed in with the new password");
    assert_eq!(elsewhere.get(&format!("{}/portal", app.base)).status, 303, "the other session ended");
    let mut c = healthfolio::db::Db::conn(&app.hf.db).expect("conn");
    assert!(healthfolio::auth::accounts::login(&mut c, "ada@example.org", PASSWORD, "test").is_err());
    assert!(healthfolio::auth::accounts::login(&mut c, "ada@example.org", new, "test").is_ok());
    assert_eq!(Browser::default().get(&url).status, 404, "spent");
    // An invitation code is not a reset code, and the other way round.
    assert_eq!(Browser::default().get(&format!("{}/portal/invite/{code}", app.base)).status, 404);
}

/// A provider whose grant lets it change the record asks for the invitation over the API (and
/// one without that grant, or for a patient who has a login already, is refused).
fn provider_invites_a_patient(app: &TestApp) {
    let p = app.create(patient(NHS[1], "Sharma", "Priya"));
    let token = |org: &str| {
        let mut claims = healthfolio::auth::Claims::new(
            &app.base,
            &app.fhir,
            "x",
            &format!("{org}-system"),
            "system/*.cruds",
            None,
            300,
        );
        claims.org = Some(format!("Organization/{org}"));
        app.hf.keys.sign(&claims).expect("sign")
    };
    app.grant(&p, healthfolio::consent::Grantee::Organization("Organization/riverside".into()), "patient/*.cruds");
    let riverside = app.client_with(Some(token("riverside")));
    let other = app.client_with(Some(token("elsewhere")));
    let empty = serde_json::json!({"resourceType": "Parameters"});
    assert_eq!(other.post(&format!("Patient/{p}/$invite"), &empty).status, 404, "no grant: not found");
    let r = riverside.post(&format!("Patient/{p}/$invite"), &empty);
    assert_eq!(r.status, 200, "{}", r.text);
    let link = r.body["parameter"][0]["valueUrl"].as_str().expect("link").to_string();
    assert!(link.starts_with(&format!("{}/portal/invite/", app.base)), "{link}");
    let mut b = Browser::default();
    assert_eq!(b.get(&link).status, 200, "the link opens the set-up page");
    patient_with_login(app, NHS[2], "olu@example.org");
    let with_login =
        app.client().get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[2])).ids()[0].clone();
    assert_eq!(app.client().post(&format!("Patient/{with_login}/$invite"), &empty).status, 409);
}

both!(invitation_creates_the_login_once, reset_link_sets_a_new_password, provider_invites_a_patient);

/// Self sign-up: only when the deployment enables it; a new person gets a record and a login; an
/// NHS number already held here is refused (its owner is invited instead).
#[test]
fn self_sign_up_when_enabled() {
    let closed = TestApp::sqlite();
    assert_eq!(Browser::default().get(&format!("{}/portal/signup", closed.base)).status, 404);
    let login = Browser::default().get(&format!("{}/portal/login", closed.base));
    assert!(!login.body.contains("/portal/signup"));

    let app = TestApp::sqlite_configured(|o| o.open_signup = true);
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    assert!(login.body.contains("/portal/signup"), "the sign-in page offers it");
    let url = format!("{}/portal/signup", app.base);
    let submit = |b: &mut Browser, nhs: &str, email: &str| {
        let page = b.get(&url);
        assert_eq!(page.status, 200);
        let csrf = page.field("csrf");
        b.post(
            &url,
            &[
                ("csrf", csrf.as_str()),
                ("given", "Ada"),
                ("family", "Okafor"),
                ("birth_date-day", "14"),
                ("birth_date-month", "3"),
                ("birth_date-year", "1972"),
                ("nhs_number", nhs),
                ("email", email),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
    };
    // Date of birth: day, month and year boxes (GOV.UK date input), checked before anything else.
    let page = b.get(&url);
    assert!(page.body.contains("autocomplete=\"bday-day\"") && !page.body.contains("type=\"date\""), "{}", page.body);
    let form = [("csrf", page.field("csrf")), ("birth_date-day", "14".into()), ("birth_date-year", "1972".into())];
    let no_month = b.post(&url, &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    assert_eq!(no_month.status, 400);
    assert!(no_month.body.contains("Your date of birth must include a month"), "{}", no_month.body);
    assert!(no_month.body.contains("id=\"birth_date-error\""), "shown against the date: {}", no_month.body);
    let bad = submit(&mut b, "943 476 5918", "ada@example.org");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("NHS number is not valid"), "{}", bad.body);
    assert!(bad.body.contains("value=\"Ada\""), "what was typed is kept");
    let done = submit(&mut b, "943 476 5919", "ada@example.org");
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/portal")), "{}", done.body);
    let home = b.get(&format!("{}/portal", app.base));
    assert!(home.body.contains("943 476 5919"), "{}", home.body);
    // The same NHS number again, by someone else: refused, nothing created.
    let mut other = Browser::default();
    let taken = submit(&mut other, "9434765919", "someone@example.org");
    assert_eq!(taken.status, 400);
    assert!(taken.body.contains("already held here"), "{}", taken.body);
    assert_eq!(app.client().get("Patient?_summary=count").body["total"], 1);
}
