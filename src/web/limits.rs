//! Rate limits on the endpoints that guess-and-retry attacks aim at (token, sign-in), per address
//! and per client, and a global in-flight limit. Each replica limits on its own: a limit is a
//! safety valve, not state that must be shared.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Limits {
    per_address: DefaultKeyedRateLimiter<String>,
    per_client: DefaultKeyedRateLimiter<String>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_address: RateLimiter::keyed(quota(600, 120)),
            per_client: RateLimiter::keyed(quota(600, 120)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: 4096,
        }
    }
}

impl Limits {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether one more request from this address (and client, if known) may go on now.
    pub fn allow(&self, address: &str, client: Option<&str>) -> bool {
        self.per_address.check_key(&address.to_string()).is_ok()
            && client.is_none_or(|c| self.per_client.check_key(&c.to_string()).is_ok())
    }
}

/// The address a request comes from, for rate limits: the connection's peer, or behind a
/// trusted proxy the address it appended last to `X-Forwarded-For` (earlier entries are the
/// client's own to write, so they are not believed).
pub fn client_address(req: &actix_web::HttpRequest, behind_proxy: bool) -> String {
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    if !behind_proxy {
        return peer;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .last()
        .map_or(peer, str::to_string)
}

pub fn too_many() -> HttpResponse {
    HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
        .insert_header((header::RETRY_AFTER, "10"))
        .json(serde_json::json!({"error": "temporarily_unavailable", "error_description": "too many requests: wait and try again"}))
}

/// Refuses work beyond the global in-flight limit rather than queueing without bound.
pub async fn in_flight(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = req.app_data::<web::Data<super::AppState>>().cloned();
    let Some(state) = state else { return next.call(req).await.map(ServiceResponse::map_into_boxed_body) };
    let slot = Slot::take(state.clone());
    if slot.over {
        state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Ok(req.into_response(too_many()));
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// One request's place in the in-flight count, given back when dropped: also when the client goes
/// away and the request's future is dropped before it finishes.
struct Slot {
    state: web::Data<super::AppState>,
    over: bool,
}

impl Slot {
    fn take(state: web::Data<super::AppState>) -> Slot {
        let now = state.limits.in_flight.fetch_add(1, Ordering::AcqRel);
        let over = now >= state.limits.max_in_flight;
        Slot { state, over }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.limits.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::client_address;
    use actix_web::test::TestRequest;

    #[test]
    fn behind_a_proxy_the_address_it_appended_counts() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:4000".parse().expect("addr"))
            .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.7"))
            .to_http_request();
        assert_eq!(client_address(&req, false), "10.0.0.2", "no proxy configured: the header is not believed");
        assert_eq!(client_address(&req, true), "203.0.113.7", "the last hop's entry, not the client's own");
        let junk = TestRequest::default()
            .peer_addr("10.0.0.2:4000".parse().expect("addr"))
            .insert_header(("X-Forwarded-For", "not-an-address"))
            .to_http_request();
        assert_eq!(client_address(&junk, true), "10.0.0.2");
    }
}
