//! Bad input that once got a 5xx or no answer at all: each is refused with the right 4xx, as an
//! OperationOutcome on the API and a page on the portal, the same on both databases.

use crate::both;
use crate::fixtures::*;
use crate::support::TestApp;
use serde_json::json;

/// A body that is JSON but not an object is no resource: every write refuses it with 400, before
/// anything indexes into it.
fn non_object_bodies_are_refused(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let a = app.create(allergy(&p, "high"));
    for body in [&b"[]"[..], b"\"x\"", b"1", b"null"] {
        let shown = String::from_utf8_lossy(body);
        for (method, path) in [
            ("PUT", format!("AllergyIntolerance?_id={a}")),
            ("PUT", format!("AllergyIntolerance/{a}")),
            ("POST", "AllergyIntolerance".to_string()),
            ("POST", String::new()),
        ] {
            let r = c.request(method, &path, Some("application/fhir+json"), Some(body));
            assert_eq!(r.status, 400, "{method} {path} with {shown}: {}", r.text);
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {path} with {shown}");
        }
        // The same body as a Bundle entry's resource, in a batch and in a transaction.
        let resource: serde_json::Value = serde_json::from_slice(body).expect("json");
        for kind in ["batch", "transaction"] {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"resource": resource, "request": {"method": "PUT", "url": format!("AllergyIntolerance?_id={a}")}}]});
            let r = c.post("", &bundle);
            assert_eq!(r.status, 400, "{kind} entry with {shown}: {}", r.text);
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{kind} entry with {shown}");
        }
    }
    assert_eq!(c.get(&format!("AllergyIntolerance/{a}")).body["meta"]["versionId"], "1", "nothing was written");
}

both!(non_object_bodies_are_refused);
