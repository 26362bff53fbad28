//! The HTTP edge: routes, extractors, content negotiation and error rendering. Handlers are thin:
//! they parse, call the domain with the caller's [`AccessContext`](crate::access::AccessContext),
//! and render.

mod bulk;
pub mod error;
pub mod extract;
mod fhir;
mod intake;
mod invite;
pub mod limits;
mod oauth;
pub mod observe;
mod openapi;
mod operations;
pub mod pages;
mod portal;
mod record;
mod signup;
mod tls;
mod transfer;
mod wellknown;

use crate::Healthfolio;
use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use std::net::TcpListener;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub struct AppState {
    pub hf: Healthfolio,
    pub metrics: std::sync::Arc<observe::Metrics>,
    pub sources: std::sync::Arc<crate::federation::client::SourceClient>,
    pub limits: limits::Limits,
    pub capabilities: String,
    /// Background workers run while the server holding this is up.
    pub alive: std::sync::Arc<()>,
    pub messages: crate::federation::messages::MessageWriter,
}

impl AppState {
    pub fn endpoints(&self) -> crate::auth::oauth::Endpoints {
        self.hf.endpoints()
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in order: the specific FHIR paths first (they would otherwise match
    // `/fhir/{type}`), then the FHIR API, which carries most of the traffic.
    wellknown::configure(cfg);
    bulk::configure(cfg);
    operations::configure(cfg);
    fhir::configure(cfg);
    oauth::configure(cfg);
    portal::configure(cfg);
    invite::configure(cfg);
    openapi::configure(cfg);
    transfer::configure(cfg);
    record::configure(cfg);
    signup::configure(cfg);
    cfg.route("/static/app.css", web::get().to(pages::stylesheet))
        .route("/static/favicon.svg", web::get().to(pages::favicon))
        .route("/static/upload.js", web::get().to(pages::upload_script))
        .route("/favicon.ico", web::get().to(pages::favicon))
        .route("/metrics", web::get().to(observe::metrics));
}

/// Headers every answer carries; HSTS only when the public URL is https (browsers ignore it otherwise).
fn security_headers(https: bool) -> middleware::DefaultHeaders {
    let h = middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"));
    if https {
        h.add(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
    } else {
        h
    }
}

/// Starts the server on an already-bound listener (tests bind port 0).
pub fn server(hf: Healthfolio, listener: TcpListener) -> std::io::Result<Server> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let alive = std::sync::Arc::new(());
    crate::portability::bulk::start_worker(
        hf.db.clone(),
        hf.config.base_url.clone(),
        hf.bulk_dir(),
        hf.config.bulk,
        std::sync::Arc::downgrade(&alive),
    );
    hf.db.start_maintenance(std::sync::Arc::downgrade(&alive));
    let sources = std::sync::Arc::new(crate::federation::client::SourceClient::default());
    crate::federation::sync::start_worker(
        hf.db.clone(),
        hf.keys.clone(),
        sources.clone(),
        std::time::Duration::from_secs(hf.config.sync_interval_secs),
        std::sync::Arc::downgrade(&alive),
    );
    let state = web::Data::new(AppState {
        capabilities: wellknown::capabilities(&hf.config.base_url),
        messages: crate::federation::messages::MessageWriter::start(hf.store.clone()),
        alive,
        hf,
        metrics: Default::default(),
        limits: Default::default(),
        sources,
    });
    let https = state.hf.config.base_url.starts_with("https://");
    let tls = state.hf.config.tls.as_ref().map(tls::server_config).transpose()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::Compress::default())
            .wrap(middleware::from_fn(intake::intake))
            .wrap(middleware::from_fn(limits::in_flight))
            .wrap(middleware::from_fn(observe::observe))
            .wrap(security_headers(https))
            .app_data(web::FormConfig::default().error_handler(pages::bad_form))
            .configure(configure)
            .default_service(web::to(pages::not_found))
    })
    .workers(workers)
    .shutdown_timeout(30);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    Ok(server)
}
