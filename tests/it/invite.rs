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

both!(invitation_creates_the_login_once);
