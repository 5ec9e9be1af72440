//! fault-proxy: an HTTP proxy between AWS clients and the proof environment's emulators (moto, the SSM
//! simulator) that answers a seeded share of requests with each service's own throttling error, 500 and 503
//! errors in the service's protocol, or a connection cut halfway through the real response; adds latency and
//! a round trip; caps bandwidth per connection; and counts all of it.
//!
//! Control (same port; no S3 bucket name starts with `_`):
//!   GET  /_fault-proxy/plan       the plan in force
//!   PUT  /_fault-proxy/plan       replace it (JSON, see plan.rs); 400 with the reason when invalid
//!   GET  /_fault-proxy/counters   requests, forwards and injected faults per `service:operation`, and totals
//!   GET  /_fault-proxy/requests   the most recent requests (20,000), oldest first: arrival, duration, operation,
//!                                 the signer's access key ID, the region signed for, and whether it was an
//!                                 EC2 dry run (DryRun=true)

mod counters;
mod forward;
mod plan;
mod protocol;

use std::{net::SocketAddr, path::PathBuf, sync::{Arc, Mutex}};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;

use forward::Proxy;
use plan::Plan;

#[derive(Parser, Debug)]
#[command(version, about = "HTTP proxy that injects AWS faults between clients and the proof environment's emulators")]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound port to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The emulator requests go to unless a --route names their service (moto).
    #[arg(long)]
    upstream: String,
    /// SERVICE=URL: requests signed for SERVICE go to URL instead (for example ssm=http://127.0.0.1:PORT).
    #[arg(long = "route", value_parser = parse_route)]
    routes: Vec<(String, String)>,
    /// The plan to start with (JSON, as PUT /_fault-proxy/plan takes); default: forward everything untouched.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Overrides the plan's seed.
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_route(text: &str) -> Result<(String, String), String> {
    let (service, url) = text.split_once('=').ok_or_else(|| format!("{text:?} is not SERVICE=URL"))?;
    Ok((service.to_string(), url.trim_end_matches('/').to_string()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let options = Options::parse();
    let mut initial = match &options.plan {
        Some(path) => serde_json::from_slice::<Plan>(&std::fs::read(path).with_context(|| format!("read {path:?}"))?)
            .with_context(|| format!("parse the plan {path:?}"))?,
        None => Plan::default(),
    };
    if let Some(seed) = options.seed {
        initial.seed = seed;
    }
    initial.validate().map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let proxy = Arc::new(Proxy {
        client,
        default_upstream: options.upstream.trim_end_matches('/').to_string(),
        routes: options.routes,
        plan: Mutex::new(initial),
        counters: Mutex::new(counters::Counters::default()),
    });
    let app = Router::new()
        .route("/_fault-proxy/plan", get(get_plan).put(put_plan))
        .route("/_fault-proxy/counters", get(get_counters))
        .route("/_fault-proxy/requests", get(get_requests))
        .fallback(forward::handle)
        .with_state(proxy);
    let listener = tokio::net::TcpListener::bind(options.listen).await.with_context(|| format!("bind {}", options.listen))?;
    let address = listener.local_addr()?;
    if let Some(path) = &options.port_file {
        // Written whole, then renamed: a launcher polling the file never reads half a port.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, address.port().to_string())?;
        std::fs::rename(&partial, path)?;
    }
    tracing::info!(%address, "fault-proxy listening");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn get_plan(State(proxy): State<Arc<Proxy>>) -> Json<Plan> {
    Json(proxy.plan.lock().unwrap().clone())
}

async fn put_plan(State(proxy): State<Arc<Proxy>>, body: axum::body::Bytes) -> Response {
    let plan: Plan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a plan: {e}")).into_response(),
    };
    if let Err(reason) = plan.validate() {
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    *proxy.plan.lock().unwrap() = plan.clone();
    Json(plan).into_response()
}

async fn get_requests(State(proxy): State<Arc<Proxy>>) -> Json<serde_json::Value> {
    Json(proxy.counters.lock().unwrap().requests())
}

async fn get_counters(State(proxy): State<Arc<Proxy>>) -> Json<serde_json::Value> {
    Json(proxy.counters.lock().unwrap().report())
}
