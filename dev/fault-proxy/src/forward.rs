//! One request through the proxy: identify it, decide, then answer with a fault or forward it to its emulator.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::{
    counters::{Counters, Logged},
    plan::{self, Fault, Plan, decide},
    protocol::{self, Protocol},
};

pub struct Proxy {
    pub client: reqwest::Client,
    /// The emulator for requests whose service has no route of its own.
    pub default_upstream: String,
    /// (signing name, emulator base URL).
    pub routes: Vec<(String, String)>,
    pub plan: Mutex<Plan>,
    pub counters: Mutex<Counters>,
}

/// Query-protocol bodies are read whole to find the operation; they are small. Other bodies stream.
const MAX_BUFFERED_BODY: usize = 64 << 20;

/// Headers that belong to one hop, not to the request.
const HOP_BY_HOP: [HeaderName; 6] =
    [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE, header::TRAILER, header::PROXY_AUTHORIZATION];

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let arrived = Instant::now();
    let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0;
    let (access_key, region) = signer(request.headers(), request.uri().query().unwrap_or(""));
    let mut dry_run = false;
    let (key, fault, response) = answer(&proxy, request, &mut dry_run).await;
    let ms = arrived.elapsed().as_secs_f64() * 1000.0;
    proxy.counters.lock().unwrap().log(Logged { at_ms, ms, operation: key, fault: fault.map(Fault::name), access_key, region, dry_run });
    response
}

/// Who signed a request and for which region: the SigV4 credential scope (`<key>/<date>/<region>/<service>/
/// aws4_request`), from the Authorization header or, for a presigned URL, the X-Amz-Credential parameter.
pub fn signer(headers: &HeaderMap, query: &str) -> (Option<String>, Option<String>) {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .map(|scope| scope.split([',', ' ']).next().unwrap_or_default().to_string());
    let from_query = || {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("X-Amz-Credential="))
            .map(|scope| scope.replace("%2F", "/").replace("%2f", "/"))
    };
    let Some(scope) = from_header.or_else(from_query) else {
        return (None, None);
    };
    let mut fields = scope.split('/');
    let access_key = fields.next().map(str::to_string);
    let region = fields.nth(1).map(str::to_string);
    (access_key, region)
}

/// The answer to one request: its `service:operation`, the fault injected, the response; `dry_run` is set for
/// an EC2 request that carries DryRun=true.
async fn answer(proxy: &Proxy, request: Request, dry_run: &mut bool) -> (String, Option<Fault>, Response) {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let service = protocol::service(&parts.headers, &query);
    let protocol = Protocol::of(&service, &parts.headers);
    let (body, buffered) = if protocol.operation_in_body() {
        match axum::body::to_bytes(body, MAX_BUFFERED_BODY).await {
            Ok(bytes) => (None, bytes),
            Err(e) => return ("unknown:Unknown".into(), None, (StatusCode::BAD_REQUEST, format!("fault-proxy: could not read the request body: {e}")).into_response()),
        }
    } else {
        (Some(body), Bytes::new())
    };
    let operation = protocol::operation(protocol, &parts.method, &path, &query, &parts.headers, &buffered);
    *dry_run = protocol == Protocol::Ec2 && protocol::parameter(std::str::from_utf8(&buffered).unwrap_or(""), "DryRun").as_deref() == Some("true");
    let key = format!("{service}:{operation}");
    let decision = {
        let plan = proxy.plan.lock().unwrap().clone();
        let sequence = proxy.counters.lock().unwrap().received(&key);
        decide(&plan, &service, &operation, sequence)
    };
    let bandwidth = decision.bandwidth_bytes_per_second;
    // A HEAD answer has no body to cut (its Content-Length is the object's size, not this answer's framing), so
    // a reset drawn for one is not injected.
    let decision = match decision.fault {
        Some(Fault::Reset) if parts.method == axum::http::Method::HEAD => plan::Decision { fault: None, ..decision },
        _ => decision,
    };
    if decision.latency_ms > 0 {
        proxy.counters.lock().unwrap().update(&key, |c| c.delayed += 1);
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    if let Some(fault @ (Fault::Throttle | Fault::Internal | Fault::Unavailable)) = decision.fault {
        proxy.counters.lock().unwrap().injected(&key, fault);
        // The body is read first, as a server does before it answers, so the client sees the error rather than
        // a broken pipe while still sending.
        if let Some(body) = body {
            let _ = body.into_data_stream().try_for_each(|_| async { Ok(()) }).await;
        }
        let request_id = format!("fault-proxy-{service}-{operation}");
        let (status, content_type, text) = protocol::error_response(protocol, fault, &request_id);
        let mut response = (status, [(header::CONTENT_TYPE, content_type)], text).into_response();
        if protocol == Protocol::Json {
            response.headers_mut().insert("x-amzn-requestid", request_id.parse().unwrap());
        }
        return (key, Some(fault), response);
    }

    let upstream = proxy.routes.iter().find(|(s, _)| *s == service).map_or(&proxy.default_upstream, |(_, u)| u);
    let url = match parts.uri.path_and_query() {
        Some(pq) => format!("{upstream}{pq}"),
        None => upstream.clone(),
    };
    let outgoing_body = match body {
        Some(body) => reqwest::Body::wrap_stream(limited(body.into_data_stream(), bandwidth)),
        None => reqwest::Body::from(buffered),
    };
    let sent = proxy.client.request(parts.method.clone(), &url).headers(end_to_end(&parts.headers)).body(outgoing_body).send().await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            proxy.counters.lock().unwrap().update(&key, |c| c.upstream_errors += 1);
            return (key, None, (StatusCode::BAD_GATEWAY, format!("fault-proxy: {url}: {e}")).into_response());
        }
    };
    proxy.counters.lock().unwrap().update(&key, |c| c.forwarded += 1);
    let status = answer.status();
    let mut headers = end_to_end(answer.headers());
    let body = if decision.fault == Some(Fault::Reset) {
        proxy.counters.lock().unwrap().injected(&key, Fault::Reset);
        // The whole answer is read (the emulator finished its work), then only its first half reaches the client
        // before the connection breaks.
        let bytes = answer.bytes().await.unwrap_or_default();
        let half = bytes.slice(..bytes.len() / 2);
        if bytes.is_empty() {
            // An empty answer with its Content-Length: 0 would be complete before the cut; without it the body
            // is chunked, and the cut leaves it unterminated.
            headers.remove(header::CONTENT_LENGTH);
        }
        Body::from_stream(futures::stream::iter([
            Ok(half),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault-proxy: connection reset mid-response")),
        ]))
    } else {
        Body::from_stream(limited(answer.bytes_stream(), bandwidth))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    (key, decision.fault, response)
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in &HOP_BY_HOP {
        kept.remove(name);
    }
    kept.remove("keep-alive");
    kept
}

/// `stream` at no more than `bytes_per_second` (none: as fast as it comes), paced from its first byte.
fn limited<S, E>(stream: S, bytes_per_second: Option<u64>) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    let mut started: Option<Instant> = None;
    let mut moved = 0u64;
    stream.then(move |chunk| {
        let due = match (&chunk, bytes_per_second) {
            (Ok(bytes), Some(rate)) => {
                let start = *started.get_or_insert_with(Instant::now);
                moved += bytes.len() as u64;
                Some(start + Duration::from_secs_f64(moved as f64 / rate as f64))
            }
            _ => None,
        };
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            chunk
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_comes_from_the_header_or_the_presigned_query() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=ASIAB/20261202/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=0".parse().unwrap(),
        );
        assert_eq!(signer(&headers, ""), (Some("ASIAB".into()), Some("eu-west-1".into())));
        let query = "x-id=PutObject&X-Amz-Credential=ASIAP%2F20261202%2Fus-east-2%2Fs3%2Faws4_request&X-Amz-Signature=0";
        assert_eq!(signer(&HeaderMap::new(), query), (Some("ASIAP".into()), Some("us-east-2".into())));
        assert_eq!(signer(&HeaderMap::new(), "list-type=2"), (None, None));
    }
}
