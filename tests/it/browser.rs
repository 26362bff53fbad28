//! The patient portal in a real browser: Debian's headless Chromium, driven by Playwright
//! (tests/browser/portal.mjs), with axe-core on every page at desktop width and at 320 px, and a
//! reflow check at 200 % zoom.
//! This side seeds the record, the provider and an app, then runs the script and checks what it
//! left behind in the database. Screenshots go to target/browser-screenshots/<sqlite|postgres>/.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use crate::tools::{self, run};
use healthfolio::db::Backend;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

const CHROMIUM: &str = "/usr/bin/chromium";
const PROVIDER_ORG: &str = "Organization/riverside";
/// The name `backend_client` registers the provider system under.
const PROVIDER_NAME: &str = "Riverside GP system";
/// What the patient adds on the "add a medicine" form (one of the portal's choices).
const ADDED: (&str, &str) = ("329653008", "Ibuprofen 400mg tablets");

/// Serialises installing Chromium: both database variants may ask at once.
static CHROMIUM_INSTALL: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    tools::root().join("tests/browser")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Debian's Chromium (no browser download by npm); installed here if we may.
fn ensure_chromium() {
    let _one_at_a_time = CHROMIUM_INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if Path::new(CHROMIUM).exists() {
        return;
    }
    let how = "The browser tests need Debian's Chromium at /usr/bin/chromium: \
               install it with `sudo apt-get update && sudo apt-get install -y chromium`";
    if !is_root() {
        panic!("{how}");
    }
    eprintln!("browser tests: installing chromium with apt-get");
    let installed = run(Command::new("apt-get").args(["install", "-y", "chromium"]))
        .or_else(|_| run(Command::new("apt-get").arg("update")))
        .and_then(|_| run(Command::new("apt-get").args(["install", "-y", "chromium"])));
    if let Err(e) = installed {
        panic!("{how} ({e})");
    }
    assert!(Path::new(CHROMIUM).exists(), "{how} (apt-get succeeded but {CHROMIUM} is missing)");
}

/// Chromium, and the npm packages tests/browser/package-lock.json pins (playwright-core never
/// downloads a browser).
fn ensure_tools() {
    ensure_chromium();
    tools::ensure_node_modules(&browser_dir());
}

fn screenshot_dir(app: &TestApp) -> PathBuf {
    let target = tools::target();
    let db = match app.hf.db.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = target.join("browser-screenshots").join(db);
    // Only this run's pictures.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A record worth looking at: a prescriber at a practice, a current prescription with structured
/// dosage and a dispense, a finished one, a high-criticality allergy and a health problem.
fn seed(app: &TestApp, p: &str) {
    let org = app.create(json!({"resourceType": "Organization", "name": "Riverside Medical Practice"}));
    let dr = app.create(json!({"resourceType": "Practitioner",
        "name": [{"family": "Carter", "given": ["Helen"], "prefix": ["Dr"]}]}));
    app.create(json!({"resourceType": "PractitionerRole", "practitioner": {"reference": format!("Practitioner/{dr}")},
        "organization": {"reference": format!("Organization/{org}")}}));
    let (code, display) = SIMVASTATIN;
    let mut current = medication_request(p, code, display, "active", "2024-02-10");
    current["requester"] = json!({"reference": format!("Practitioner/{dr}")});
    current["dosageInstruction"] = json!([{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]);
    let current = app.create(current);
    app.create(json!({"resourceType": "MedicationDispense", "status": "completed",
        "subject": {"reference": format!("Patient/{p}")},
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code, "display": display}]},
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{current}")}],
        "whenHandedOver": "2025-09-29T09:40:00Z"}));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(p, code, display, "completed", "2023-06-01"));
    app.create(allergy(p, "high"));
    app.create(json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{p}")},
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Type 2 diabetes"},
        "onsetDateTime": "2020-01-01"}));
}

fn portal_in_a_browser(app: &TestApp) {
    ensure_tools();
    let email = "ada@example.org";
    let p = patient_with_login(app, NHS[0], email);
    seed(app, &p);
    let token = provider_system_token(app, PROVIDER_ORG);
    // An app asking for access: its consent page, shown to the signed-in patient.
    let (consent_url, _, _) = authorize_url(
        app,
        &oauth_client(app, &public_app(app)),
        "launch/patient openid fhirUser patient/MedicationRequest.rs patient/AllergyIntolerance.rs",
    );
    // Another patient's one-time invitation: the page for setting up a login.
    let invited = app.create(patient(NHS[1], "Hughes", "Ben"));
    let code = healthfolio::auth::invitations::invite(&mut app.hf.db.conn().expect("conn"), &invited).expect("invite");
    // The sign-up page, on an instance that offers it (this one does not).
    let open = TestApp::sqlite_configured(|o| o.open_signup = true);
    // The page a password reset link opens (the operator issues it; no email server).
    let reset = healthfolio::auth::invitations::reset_link(&mut app.hf.db.conn().expect("conn"), email).expect("reset");
    let shots = screenshot_dir(app);

    let started = Instant::now();
    let out = Command::new("node")
        .arg(browser_dir().join("portal.mjs"))
        .env("HF_BASE_URL", &app.base)
        .env("HF_EMAIL", email)
        .env("HF_PASSWORD", PASSWORD)
        .env("HF_PATIENT_ID", &p)
        .env("HF_PATIENT_NAME", "Ada Okafor")
        .env("HF_MEDICINES", format!("{}|{}", SIMVASTATIN.1, PARACETAMOL.1))
        .env("HF_ALLERGY", "Penicillin")
        .env("HF_ADD_MEDICINE", ADDED.1)
        .env("HF_PROVIDER_TOKEN", &token)
        .env("HF_PROVIDER_ORG", PROVIDER_ORG)
        .env("HF_PROVIDER_NAME", PROVIDER_NAME)
        .env("HF_CONSENT_URL", &consent_url)
        .env("HF_INVITE_URL", format!("{}/portal/invite/{code}", app.base))
        .env("HF_RESET_URL", format!("{}/portal/reset/{reset}", app.base))
        .env("HF_SIGNUP_URL", format!("{}/portal/signup", open.base))
        .env("HF_SCREENSHOT_DIR", &shots)
        .env("HF_CHROMIUM", CHROMIUM)
        .output()
        .unwrap_or_else(|e| panic!("node could not start (the browser tests need Node.js 20+): {e}"));
    // Through the test harness's capture: shown when the test fails, or with --nocapture.
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/browser/portal.mjs failed ({}): see its output above", out.status);
    println!("browser test took {:.1} s; screenshots in {}", started.elapsed().as_secs_f64(), shots.display());

    // What the browser did is in the record: the medicine as reported by the patient, and the
    // grant to the provider, ended.
    let statements = app.client().get(&format!("MedicationStatement?patient={p}"));
    let st = &statements.entries()[0]["resource"];
    assert_eq!(st["medicationCodeableConcept"]["coding"][0]["code"], ADDED.0, "{}", statements.text);
    assert_eq!(st["informationSource"]["reference"], format!("Patient/{p}"), "patient-reported");
    let provider = app.client_with(Some(token));
    assert_eq!(provider.get(&format!("MedicationRequest?patient={p}")).ids(), Vec::<String>::new(), "sharing ended");
}

both!(portal_in_a_browser);
