//! Calls to a source's FHIR API: SMART discovery, a Backend Services token (the `oauth2` crate as
//! the client), searches with a deadline, and a circuit breaker per source.

use super::sources::Source;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, Scope, TokenResponse, TokenUrl};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BREAKER_FAILURES: u32 = 3;
const BREAKER_OPEN: Duration = Duration::from_secs(30);
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Default)]
pub struct SourceClient {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    breaker: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

fn agent(timeout: Duration) -> ureq::Agent {
    // No redirects: a source answers from its own address or not at all.
    ureq::AgentBuilder::new().timeout(timeout).redirects(0).build()
}

fn get_json(url: &str, token: Option<&str>, timeout: Duration) -> Result<Value, String> {
    let mut req = agent(timeout).get(url).set("Accept", "application/fhir+json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => r.into_json().map_err(|e| format!("answered with something that is not JSON ({e})")),
        Err(ureq::Error::Status(code, _)) => Err(format!("answered HTTP {code}")),
        Err(e) => Err(format!("did not answer in time or could not be reached ({})", e.kind())),
    }
}

/// A bulk extract is large: it is read up to this size, and refused beyond it.
const EXTRACT_LIMIT: u64 = 256 * 1024 * 1024;

impl SourceClient {
    /// Downloads a bulk extract file (NDJSON) from the source, with the source's token. Only URLs
    /// on the source's own origin are called: a feed cannot send us elsewhere.
    pub fn fetch_file(&self, s: &Source, url: &str, timeout: Duration) -> Result<String, String> {
        let token = self.token(s, timeout)?;
        read_file(&s.fhir_base, url, token.as_deref(), timeout)
    }

    /// A Bulk Data export of what the source shares with us: [`bulk_export`] with our token there.
    pub fn bulk_export(
        &self,
        s: &Source,
        query: &str,
        timeout: Duration,
        deadline: Duration,
        each: impl FnMut(&str, String) -> Result<(), String>,
    ) -> Result<usize, String> {
        let token = self.token(s, timeout)?;
        bulk_export(&s.fhir_base, token.as_deref(), query, timeout, deadline, each)
    }

    /// Whether the breaker lets a call through now.
    pub fn closed(&self, source: &str) -> bool {
        let Ok(b) = self.breaker.lock() else { return true };
        b.get(source).and_then(|(_, open)| *open).is_none_or(|until| Instant::now() >= until)
    }

    fn record(&self, source: &str, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            let e = b.entry(source.to_string()).or_insert((0, None));
            if ok {
                *e = (0, None);
            } else {
                e.0 += 1;
                if e.0 >= BREAKER_FAILURES {
                    e.1 = Some(Instant::now() + BREAKER_OPEN);
                }
            }
        }
    }

    fn token(&self, s: &Source, timeout: Duration) -> Result<Option<String>, String> {
        let Some((client_id, kid, der)) = &s.credentials else { return Ok(None) };
        if let Some((t, until)) = self.tokens.lock().ok().and_then(|m| m.get(&s.name).cloned()) {
            if Instant::now() < until {
                return Ok(Some(t));
            }
        }
        let config = get_json(&format!("{}/.well-known/smart-configuration", s.fhir_base), None, timeout)?;
        let token_url =
            config["token_endpoint"].as_str().ok_or("has no token_endpoint in its SMART configuration")?.to_string();
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "jti": uuid::Uuid::new_v4().to_string()});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(kid.clone());
        let assertion = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(der))
            .map_err(|e| format!("assertion: {e}"))?;
        let client = BasicClient::new(ClientId::new(client_id.clone()))
            .set_token_uri(TokenUrl::new(token_url).map_err(|e| e.to_string())?)
            .set_auth_type(AuthType::RequestBody);
        let resp = client
            .exchange_client_credentials()
            .add_scope(Scope::new("system/*.rs".into()))
            .add_extra_param("client_assertion_type", ASSERTION_TYPE)
            .add_extra_param("client_assertion", assertion)
            .request(&agent(timeout))
            .map_err(|e| format!("refused our token request ({e})"))?;
        let t = resp.access_token().secret().clone();
        let life = resp.expires_in().unwrap_or(Duration::from_secs(60)).saturating_sub(Duration::from_secs(10));
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(s.name.clone(), (t.clone(), Instant::now() + life));
        }
        Ok(Some(t))
    }

    /// `GET {base}/{path}` within `timeout`; the resources of the answer (Bundle entries or one).
    pub fn fetch(&self, s: &Source, path: &str, timeout: Duration) -> Result<Vec<Value>, String> {
        self.fetch_page(s, &format!("{}/{path}", s.fhir_base), timeout).map(|(items, _)| items)
    }

    /// Every page of `GET {base}/{path}`, following the `next` links (each page within
    /// `timeout`, and only on the source's own origin). More than `max_pages` is an error rather
    /// than a silently partial answer.
    pub fn fetch_all(&self, s: &Source, path: &str, timeout: Duration, max_pages: usize) -> Result<Vec<Value>, String> {
        let mut url = format!("{}/{path}", s.fhir_base);
        let mut all = Vec::new();
        for _ in 0..max_pages {
            let (items, next) = self.fetch_page(s, &url, timeout)?;
            all.extend(items);
            match next {
                None => return Ok(all),
                Some(n) if same_origin(&n, &s.fhir_base) => url = n,
                Some(n) => return Err(format!("sent a next page elsewhere ({n})")),
            }
        }
        Err(format!("has more than {max_pages} pages of {path}"))
    }

    fn fetch_page(&self, s: &Source, url: &str, timeout: Duration) -> Result<(Vec<Value>, Option<String>), String> {
        if !self.closed(&s.name) {
            return Err("is skipped for a while after repeated failures".into());
        }
        let started = Instant::now();
        let result = self.token(s, timeout).and_then(|t| {
            let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
            get_json(url, t.as_deref(), left)
        });
        self.record(&s.name, result.is_ok());
        let v = result?;
        let next = v["link"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_string);
        let items = match v["resourceType"].as_str() {
            Some("Bundle") => v["entry"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter(|x| x["search"]["mode"] != "outcome")
                        .filter_map(|x| x.get("resource").cloned())
                        .collect()
                })
                .unwrap_or_default(),
            Some("OperationOutcome") => return Err("answered with an OperationOutcome".into()),
            _ => vec![v],
        };
        Ok((items, next))
    }
}

/// Downloads an NDJSON file (a bulk extract or export output) from the server at `base`, with
/// `token`, up to [`EXTRACT_LIMIT`]. Only URLs on that server's own origin are called.
pub(crate) fn read_file(base: &str, url: &str, token: Option<&str>, timeout: Duration) -> Result<String, String> {
    if !same_origin(url, base) {
        return Err(format!("{url} is not at the source {base}"));
    }
    let mut req = agent(timeout).get(url).set("Accept", "application/fhir+ndjson");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(format!("{url} answered HTTP {code}")),
        Err(e) => return Err(format!("{url} could not be read ({})", e.kind())),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(r.into_reader(), EXTRACT_LIMIT + 1), &mut text)
        .map_err(|e| format!("{url}: {e}"))?;
    if text.len() as u64 > EXTRACT_LIMIT {
        return Err(format!("{url} is larger than {} MB", EXTRACT_LIMIT >> 20));
    }
    Ok(text)
}

/// A Bulk Data 2.0 `Patient/$export` at `base` (what `token` may export): kick-off, polling the
/// status until `deadline`, then each output file handed to `each` (Patient files first, so what
/// the others refer to is already known). Every address called stays on that server's origin;
/// the export is deleted there once read, or abandoned.
pub(crate) fn bulk_export(
    base: &str,
    token: Option<&str>,
    query: &str,
    timeout: Duration,
    deadline: Duration,
    mut each: impl FnMut(&str, String) -> Result<(), String>,
) -> Result<usize, String> {
    let started = Instant::now();
    let with_token = |req: ureq::Request| match token {
        Some(t) => req.set("Authorization", &format!("Bearer {t}")),
        None => req,
    };
    let kick_off = with_token(agent(timeout).get(&format!("{base}/Patient/$export?{query}")))
        .set("Accept", "application/fhir+json")
        .set("Prefer", "respond-async");
    let status_url = match kick_off.call() {
        Ok(r) if r.status() == 202 => r.header("Content-Location").map(str::to_string),
        Ok(r) => return Err(format!("answered the $export kick-off with HTTP {}", r.status())),
        Err(ureq::Error::Status(code, _)) => return Err(format!("refused the $export kick-off (HTTP {code})")),
        Err(e) => return Err(format!("could not be reached for $export ({})", e.kind())),
    }
    .ok_or("answered the $export kick-off without Content-Location")?;
    if !same_origin(&status_url, base) {
        return Err(format!("sent its export status elsewhere ({status_url})"));
    }
    let mut polls = 0;
    let outcome = (|| loop {
        let polled = with_token(agent(timeout).get(&status_url)).set("Accept", "application/json").call();
        match polled {
            Ok(r) if r.status() == 202 => {
                // Exponential backoff (Bulk Data), from a tenth of a second up to the server's
                // Retry-After (whole seconds, so at least one): a small export is not kept
                // waiting a second it did not need.
                let asked = r.header("Retry-After").and_then(|v| v.parse::<f64>().ok()).filter(|w| w.is_finite());
                let backoff = 0.1 * f64::from(1u32 << polls.min(6));
                polls += 1;
                let wait = Duration::from_secs_f64(backoff.min(asked.unwrap_or(1.0)).clamp(0.1, 5.0));
                if started.elapsed() + wait > deadline {
                    return Err(format!("had not finished its export within {}s", deadline.as_secs()));
                }
                std::thread::sleep(wait);
            }
            Ok(r) => {
                let manifest: Value =
                    r.into_json().map_err(|e| format!("sent an export manifest that is not JSON ({e})"))?;
                // A partial export is not taken for a whole one (the next round asks again).
                if manifest["error"].as_array().is_some_and(|e| !e.is_empty()) {
                    return Err("reported errors in its export".into());
                }
                let mut files: Vec<(String, String)> = manifest["output"]
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter_map(|f| Some((f["type"].as_str()?.to_string(), f["url"].as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort_by_key(|(t, _)| t != "Patient");
                let files_timeout = timeout.max(Duration::from_secs(60));
                files.iter().try_for_each(|(t, url)| each(t, read_file(base, url, token, files_timeout)?))?;
                return Ok(files.len());
            }
            Err(ureq::Error::Status(code, _)) => return Err(format!("export failed there (HTTP {code})")),
            Err(e) => return Err(format!("could not be reached for the export status ({})", e.kind())),
        }
    })();
    // Read, failed or abandoned, the export is done with (Bulk Data: DELETE the status URL).
    let _ = with_token(agent(timeout).delete(&status_url)).call();
    outcome
}

/// Whether two URLs share scheme, host and port (outbound calls stay where they were configured).
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    origin(a).is_some() && origin(a) == origin(b)
}
