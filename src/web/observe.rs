//! One log line per request with a request id (also returned as `X-Request-Id`), and the
//! Prometheus metrics behind `/metrics`. Log lines carry the route pattern, never the query string
//! or headers: those can hold names, NHS numbers and tokens.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and histograms of this process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    pub tokens_issued: AtomicU64,
    pub failed_logins: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl Metrics {
    fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let Ok(mut m) = self.requests.lock() else { return };
        let h = m.entry((method.to_string(), route.to_string(), status)).or_default();
        h.count += 1;
        h.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition of everything, plus the gauges the caller adds.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP healthfolio_http_request_duration_seconds Request latency by route and status.\n");
        out.push_str("# TYPE healthfolio_http_request_duration_seconds histogram\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), h) in m.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "healthfolio_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "healthfolio_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "healthfolio_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "healthfolio_http_request_duration_seconds_count{{{labels}}} {}", h.count);
            }
        }
        for (name, help, v) in [
            (
                "healthfolio_tokens_issued_total",
                "Access tokens issued by the token endpoint.",
                self.tokens_issued.load(Ordering::Relaxed) as f64,
            ),
            (
                "healthfolio_failed_logins_total",
                "Failed sign-in attempts.",
                self.failed_logins.load(Ordering::Relaxed) as f64,
            ),
            (
                "healthfolio_rate_limited_total",
                "Requests refused with 429.",
                self.rate_limited.load(Ordering::Relaxed) as f64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The middleware: request id, one log line, metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let metrics = req.app_data::<web::Data<super::AppState>>().map(|s| s.metrics.clone());
    let mut res = next.call(req).await?;
    let status = res.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(m) = metrics {
        m.observe(&method, &route, status, secs);
    }
    tracing::info!(request_id = %id, method = %method, route = %route, status, ms = secs * 1000.0, "request");
    Ok(res)
}

pub async fn metrics(state: web::Data<super::AppState>) -> HttpResponse {
    let (connections, idle) = state.hf.db.pool_state();
    let db = state.hf.db.clone();
    let jobs =
        web::block(move || crate::portability::bulk::counts(&db)).await.ok().and_then(Result::ok).unwrap_or_default();
    let gauges = [
        ("healthfolio_db_pool_connections", "Open database connections.", connections as f64),
        ("healthfolio_db_pool_idle", "Idle database connections.", idle as f64),
        ("healthfolio_jobs_queued", "Background jobs waiting.", jobs.0 as f64),
        ("healthfolio_jobs_running", "Background jobs running.", jobs.1 as f64),
        (
            "healthfolio_http_requests_in_flight",
            "Requests being served (this one included).",
            state.limits.in_flight() as f64,
        ),
    ];
    let mut body = state.metrics.render(&gauges);
    // Reads a replica could serve, by who served them: a replica, or the primary in its stead
    // (lagging, down, or the caller's own write not there yet). Both 0 without replicas.
    let (replica, primary) = state.hf.db.reads_served();
    let _ = writeln!(
        body,
        "# HELP healthfolio_db_reads_total Reads a replica may serve, by the pool that served them.\n\
         # TYPE healthfolio_db_reads_total counter\n\
         healthfolio_db_reads_total{{pool=\"replica\"}} {replica}\n\
         healthfolio_db_reads_total{{pool=\"primary\"}} {primary}"
    );
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body)
}
