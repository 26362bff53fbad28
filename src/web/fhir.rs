//! FHIR REST routes at `{base}/fhir`.

use super::error::ApiError;
use super::extract::{json, read_body, Caller};
use super::{AppState, FHIR_JSON};
use crate::audit::AuditQuery;
use crate::fhir::bundle::{history_bundle, outcome, parse_etag, searchset, searchset_text};
use crate::fhir::history::HistoryRequest;
use crate::fhir::read_consents;
use crate::fhir::read_events;
use crate::fhir::search::SearchRequest;
use crate::fhir::store::WriteOptions;
use crate::fhir::{resource_type, time, FhirError, Interaction, Stored, WriteOutcome};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir", web::post().to(bundle))
        .route("/fhir/", web::post().to(bundle))
        .route("/fhir/_history", web::get().to(system_history))
        .route("/fhir/{type}", web::get().to(search_get))
        .route("/fhir/{type}", web::post().to(create))
        .route("/fhir/{type}", web::put().to(conditional_update))
        .route("/fhir/{type}/_search", web::post().to(search_post))
        .route("/fhir/{type}/_history", web::get().to(type_history))
        .route("/fhir/{type}/{id}", web::get().to(read))
        .route("/fhir/{type}/{id}", web::put().to(update))
        .route("/fhir/{type}/{id}", web::patch().to(patch))
        .route("/fhir/{type}/{id}", web::delete().to(delete))
        .route("/fhir/{type}/{id}/{sub}", web::get().to(instance_sub))
        .route("/fhir/{type}/{id}/_history/{vid}", web::get().to(vread));
}

/// How the client wants the answer.
struct Negotiated {
    pretty: bool,
}

fn negotiate(req: &HttpRequest) -> Result<Negotiated, ApiError> {
    let q = query_params(req)?;
    let format = q.iter().find(|(k, _)| k == "_format").map(|(_, v)| v.as_str());
    let json_like = |s: &str| {
        s.split(',').any(|m| {
            let m = m.split(';').next().unwrap_or_default().trim();
            matches!(m, "application/fhir+json" | "application/json" | "json" | "*/*" | "application/*" | "")
        })
    };
    if let Some(f) = format {
        if !json_like(f) {
            return Err(ApiError::NotAcceptable(format!("_format={f} is not served: this server speaks JSON only")));
        }
    } else if let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        if !json_like(accept) {
            return Err(ApiError::NotAcceptable(format!("Accept: {accept} is not served: use application/fhir+json")));
        }
    }
    let pretty = q.iter().any(|(k, v)| k == "_pretty" && v == "true");
    Ok(Negotiated { pretty })
}

fn query_params(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::invalid("the query string is not valid URL encoding").into())
}

fn known(rtype: &str) -> Result<&'static str, ApiError> {
    resource_type(rtype).ok_or_else(|| {
        FhirError::NotFound(format!(
            "resource type '{rtype}' (this server holds {})",
            crate::fhir::RESOURCE_TYPES.join(", ")
        ))
        .into()
    })
}

fn json_body(req: &HttpRequest, body: &[u8], patch: bool) -> Result<Value, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or_default().trim();
    let ok = if patch {
        matches!(mime, "application/json-patch+json")
    } else {
        matches!(mime, "application/fhir+json" | "application/json")
    };
    if !ok {
        let want = if patch { "application/json-patch+json" } else { "application/fhir+json" };
        return Err(ApiError::UnsupportedMedia(format!("Content-Type '{ct}' is not accepted here: send {want}")));
    }
    let v = json(body)?;
    // A resource (or Bundle) is an object; refused here, no handler below ever indexes into
    // anything else. A JSON Patch is an array, checked as a Patch where it is applied.
    if !patch && !v.is_object() {
        return Err(FhirError::invalid("the body must be a FHIR resource: a JSON object").into());
    }
    Ok(v)
}

fn render(status: StatusCode, v: &Value, n: &Negotiated) -> HttpResponse {
    let text = if n.pretty { serde_json::to_string_pretty(v).unwrap_or_default() } else { v.to_string() };
    HttpResponse::build(status).content_type(FHIR_JSON).body(text)
}

/// A resource with its version headers.
fn resource(status: StatusCode, s: &Stored, n: &Negotiated, location: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::build(status);
    r.content_type(FHIR_JSON)
        .insert_header((header::ETAG, s.etag()))
        .insert_header((header::LAST_MODIFIED, time::format_http_date(s.last_updated)));
    if let Some(l) = location {
        r.insert_header((header::LOCATION, l));
    }
    if n.pretty {
        let v: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        r.body(serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        r.body(s.body.clone())
    }
}

/// `Prefer: return=minimal | representation | OperationOutcome` on writes; every form carries
/// the new version's `Location`, `ETag` and `Last-Modified`.
fn written(req: &HttpRequest, base: &str, out: WriteOutcome, n: &Negotiated) -> HttpResponse {
    let status = if out.created { StatusCode::CREATED } else { StatusCode::OK };
    let location = out.stored.location(base);
    let mut r = HttpResponse::build(status);
    r.insert_header((header::ETAG, out.stored.etag()))
        .insert_header((header::LAST_MODIFIED, time::format_http_date(out.stored.last_updated)))
        .insert_header((header::LOCATION, location.clone()));
    match prefer(req, "return").as_deref() {
        Some("minimal") => r.finish(),
        Some("OperationOutcome") => {
            // The stored version, then what the medicine safety checks found: a client that
            // asks for the outcome hears every warning (the write itself stands).
            let msg = format!("{}/{} version {} stored", out.stored.rtype, out.stored.id, out.stored.version_id);
            let mut body = outcome("information", "informational", &msg);
            if let Some(issues) = body["issue"].as_array_mut() {
                issues.extend(out.warnings.iter().map(|w| w.issue(&out.stored.rtype)));
            }
            let text =
                if n.pretty { serde_json::to_string_pretty(&body).unwrap_or_default() } else { body.to_string() };
            r.content_type(FHIR_JSON).body(text)
        }
        _ => resource(status, &out.stored, n, Some(location)),
    }
}

fn prefer(req: &HttpRequest, key: &str) -> Option<String> {
    req.headers().get_all("Prefer").filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn write_options(req: &HttpRequest) -> Result<WriteOptions, ApiError> {
    let if_match = match req.headers().get(header::IF_MATCH) {
        Some(v) => Some(parse_etag(v.to_str().unwrap_or_default())?),
        None => None,
    };
    let provenance = match req.headers().get("X-Provenance") {
        Some(v) => Some(
            serde_json::from_slice(v.as_bytes())
                .map_err(|e| FhirError::invalid(format!("X-Provenance is not a JSON Provenance: {e}")))?,
        ),
        None => None,
    };
    let warnings_heard = prefer(req, "return").as_deref() == Some("OperationOutcome");
    Ok(WriteOptions { if_match, provenance, warnings_heard })
}

/// Runs blocking domain work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, FhirError> + Send + 'static) -> Result<T, ApiError> {
    Ok(web::block(f).await??)
}

async fn read(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(&req)?;
    let (t, id) = path.into_inner();
    let t = known(&t)?;
    if let Some(v) = is_view(t) {
        return view(&state, caller, v, Some(id), None, &n).await;
    }
    let store = state.hf.store.clone();
    let s = blocking(move || store.read(&caller.0, t, &id)).await?;
    if let Some(since) =
        req.headers().get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()).and_then(time::parse_http_date)
    {
        if s.last_updated / 1_000_000 <= since / 1_000_000 {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, s.etag())).finish());
        }
    }
    if let Some(inm) = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if inm.trim() == s.etag() || inm.trim() == format!("\"{}\"", s.version_id) {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, s.etag())).finish());
        }
    }
    Ok(resource(StatusCode::OK, &s, &n, None))
}

async fn vread(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(&req)?;
    let (t, id, vid) = path.into_inner();
    let t = known(&t)?;
    let vid: i64 = vid.parse().map_err(|_| FhirError::NotFound(format!("{t}/{id}/_history/{vid}")))?;
    let store = state.hf.store.clone();
    let s = blocking(move || store.vread(&caller.0, t, &id, vid)).await?;
    Ok(resource(StatusCode::OK, &s, &n, None))
}

/// The common shape of every write: negotiate, read and parse the body, run `op` off the async
/// workers with the request's write options, answer as `Prefer` asks.
async fn write_with(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
    patch: bool,
    op: impl FnOnce(
            &crate::fhir::Store,
            &crate::access::AccessContext,
            Value,
            &WriteOptions,
        ) -> Result<WriteOutcome, FhirError>
        + Send
        + 'static,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(req)?;
    let body = json_body(req, &read_body(payload, state.hf.config.body_limit).await?, patch)?;
    let opts = write_options(req)?;
    let store = state.hf.store.clone();
    let out = blocking(move || op(&store, &caller.0, body, &opts)).await?;
    Ok(written(req, &state.hf.store.base, out, &n))
}

async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t = known(&path.into_inner())?;
    let if_none_exist = req.headers().get("If-None-Exist").and_then(|v| v.to_str().ok()).map(str::to_string);
    write_with(&req, &state, caller, payload, false, move |store, ctx, body, opts| match if_none_exist {
        Some(q) => store.create_if_none_exist(ctx, t, body, &q, opts),
        None => store.create(ctx, t, body, opts),
    })
    .await
}

async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (t, id) = path.into_inner();
    let t = known(&t)?;
    write_with(&req, &state, caller, payload, false, move |store, ctx, body, opts| {
        store.update(ctx, t, &id, body, opts)
    })
    .await
}

async fn conditional_update(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t = known(&path.into_inner())?;
    let query = req.query_string().to_string();
    if query.is_empty() {
        return Err(FhirError::invalid(
            "PUT on a type needs search parameters (conditional update) or an id in the URL",
        )
        .into());
    }
    write_with(&req, &state, caller, payload, false, move |store, ctx, body, opts| {
        store.conditional_update(ctx, t, &query, body, opts)
    })
    .await
}

async fn patch(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (t, id) = path.into_inner();
    let t = known(&t)?;
    write_with(&req, &state, caller, payload, true, move |store, ctx, body, opts| store.patch(ctx, t, &id, body, opts))
        .await
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(&req)?;
    let (t, id) = path.into_inner();
    let t = known(&t)?;
    let store = state.hf.store.clone();
    let gone = blocking(move || store.delete(&caller.0, t, &id)).await?;
    let msg = match gone {
        Some(s) => format!("{}/{} deleted (version {})", s.rtype, s.id, s.version_id),
        None => "nothing to delete: the resource does not exist or was already deleted".to_string(),
    };
    Ok(render(StatusCode::OK, &outcome("information", "informational", &msg), &n))
}

fn search_params(
    req: &HttpRequest,
    params: Vec<(String, String)>,
    rtype: &str,
    compartment: Option<String>,
) -> SearchRequest {
    let strict = prefer(req, "handling").as_deref() == Some("strict");
    SearchRequest { rtype: rtype.to_string(), params, compartment, strict }
}

async fn run_search(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: Caller,
    sr: SearchRequest,
    path: String,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(req)?;
    if let Some(v) = is_view(&sr.rtype) {
        return view(state, caller, v, None, Some(sr), &n).await;
    }
    let hf = state.hf.clone();
    let sources = state.sources.clone();
    let base = hf.store.base.clone();
    let r = blocking(move || crate::federation::search(&hf.store, &hf.keys, &sources, &caller.0, &sr)).await?;
    if n.pretty {
        return Ok(render(StatusCode::OK, &searchset(&base, &path, &r), &n));
    }
    Ok(HttpResponse::Ok().content_type(FHIR_JSON).body(searchset_text(&base, &path, &r)))
}

async fn search_get(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = known(&path.into_inner())?;
    let sr = search_params(&req, query_params(&req)?, t, None);
    run_search(&req, &state, caller, sr, t.to_string()).await
}

async fn search_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t = known(&path.into_inner())?;
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMedia("POST _search takes application/x-www-form-urlencoded".into()));
    }
    let body = read_body(payload, state.hf.config.body_limit).await?;
    let mut params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| FhirError::invalid("the form body is not valid URL encoding"))?;
    params.extend(query_params(&req)?);
    let sr = search_params(&req, params, t, None);
    run_search(&req, &state, caller, sr, t.to_string()).await
}

/// `/fhir/{type}/{id}/_history` or the compartment search `/fhir/Patient/{id}/{type}`.
async fn instance_sub(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (t, id, sub) = path.into_inner();
    let t = known(&t)?;
    if sub.starts_with('$') && t == "Patient" {
        return super::operations::patient_operation(&req, &state, caller, id, &sub).await;
    }
    if sub == "_history" {
        let hr = history_request(&req, Some(t), Some(id.clone()))?;
        return history(&req, &state, caller, hr, format!("{t}/{id}/_history")).await;
    }
    if t != "Patient" {
        return Err(FhirError::NotFound(format!("{t}/{id}/{sub}: only Patient has a compartment")).into());
    }
    let inner = known(&sub)?;
    let sr = search_params(&req, query_params(&req)?, inner, Some(id.clone()));
    run_search(&req, &state, caller, sr, format!("Patient/{id}/{inner}")).await
}

fn history_request(req: &HttpRequest, rtype: Option<&str>, id: Option<String>) -> Result<HistoryRequest, ApiError> {
    let q = query_params(req)?;
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let count = match get("_count") {
        Some(c) => {
            Some(c.parse().map_err(|_| FhirError::invalid(format!("_count must be a whole number, not '{c}'")))?)
        }
        None => None,
    };
    Ok(HistoryRequest { rtype: rtype.map(str::to_string), id, since: get("_since"), count, cursor: get("_cursor") })
}

async fn history(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: Caller,
    hr: HistoryRequest,
    path: String,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(req)?;
    let store = state.hf.store.clone();
    let base = store.base.clone();
    let h = blocking(move || store.history(&caller.0, &hr)).await?;
    Ok(render(StatusCode::OK, &history_bundle(&base, &path, &h), &n))
}

async fn type_history(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = known(&path.into_inner())?;
    let hr = history_request(&req, Some(t), None)?;
    history(&req, &state, caller, hr, format!("{t}/_history")).await
}

async fn system_history(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let hr = history_request(&req, None, None)?;
    history(&req, &state, caller, hr, "_history".into()).await
}

async fn bundle(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let n = negotiate(&req)?;
    let body = json_body(&req, &read_body(payload, state.hf.config.body_limit).await?, false)?;
    let store = state.hf.store.clone();
    let heard = prefer(&req, "return").as_deref() == Some("OperationOutcome");
    let out = blocking(move || store.process_bundle(&caller.0, body, heard)).await?;
    Ok(render(StatusCode::OK, &out, &n))
}

/// The read-only views: the access log as AuditEvent, grants as Consent.
async fn view(
    state: &web::Data<AppState>,
    caller: Caller,
    rtype: &'static str,
    id: Option<String>,
    sr: Option<SearchRequest>,
    n: &Negotiated,
) -> Result<HttpResponse, ApiError> {
    let hf = state.hf.clone();
    let what = if id.is_some() { Interaction::Read } else { Interaction::Search };
    let params = sr.as_ref().map(|s| s.params.clone()).unwrap_or_default();
    let (compartment, strict) = sr.as_ref().map_or((None, false), |s| (s.compartment.clone(), s.strict));
    let id2 = id.clone();
    let items = blocking(move || match rtype {
        "AuditEvent" => {
            let mut q = AuditQuery::from_params(&params, compartment, strict)?;
            q.id = id2.or(q.id);
            read_events(&hf.db, &hf.store.audit, &caller.0, q, what)
        }
        _ => {
            let mut params = params;
            if let Some(p) = compartment {
                params.push(("patient".into(), p));
            }
            read_consents(&hf.db, &caller.0, id2.as_deref(), &params, what)
        }
    })
    .await?;
    if let Some(id) = id {
        let one = items.into_iter().next().ok_or_else(|| FhirError::not_found(rtype, &id))?;
        return Ok(render(StatusCode::OK, &one, n));
    }
    let base = &state.hf.store.base;
    let entries: Vec<Value> = items
        .into_iter()
        .map(|r| serde_json::json!({"fullUrl": format!("{base}/{rtype}/{}", r["id"].as_str().unwrap_or_default()), "resource": r, "search": {"mode": "match"}}))
        .collect();
    let b = serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "link": [{"relation": "self", "url": format!("{base}/{rtype}")}], "entry": entries});
    Ok(render(StatusCode::OK, &b, n))
}

fn is_view(rtype: &str) -> Option<&'static str> {
    match rtype {
        "AuditEvent" => Some("AuditEvent"),
        "Consent" => Some("Consent"),
        _ => None,
    }
}
