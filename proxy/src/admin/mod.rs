//! The admin HTTP endpoint on `server.admin_listen`, served by hyper
//! (HTTP/1.1 only). Requests are matched against the table in
//! [`routes`]; unknown paths get 404 with the list of endpoints, a known
//! path with another method 405. With `server.admin_token` set, every
//! endpoint but the balancers' probes needs `Authorization: Bearer <token>`.

mod auth;
mod routes;
mod status;

use crate::shared::Shared;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use auth::exposure_warning;

/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body read (POST endpoints take small forms or none).
const MAX_BODY: usize = 64 * 1024;

/// What the handlers reach: the metrics registry and the proxy's state.
pub struct Admin {
    pub handle: PrometheusHandle,
    pub shared: Arc<Shared>,
}

/// Binds `addr` and serves the admin endpoint on the current runtime.
pub async fn spawn(addr: &str, handle: PrometheusHandle, shared: Arc<Shared>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?;
    if let Some(warning) = exposure_warning(&shared.config.load()) {
        tracing::warn!("{warning}");
    }
    let admin = Arc::new(Admin { handle, shared });
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: as the client listener.
                    tracing::warn!("admin endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .title_case_headers(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("admin connection: {e}");
                }
            });
        }
    });
    Ok(())
}

/// One request as a handler sees it.
pub struct Call<'a> {
    pub admin: &'a Admin,
    query: Option<String>,
    /// The request body (empty for GET).
    pub body: Bytes,
}

impl Call<'_> {
    /// The first value of query parameter `name` (`?sort=total&limit=10`),
    /// percent-decoded.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// A handler's answer.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type,
            body,
        }
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }
}

type Response = hyper::Response<Full<Bytes>>;

impl Admin {
    async fn respond(&self, request: hyper::Request<Incoming>) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let Some(candidates) = routes::by_path(path) else {
            refused("not_found");
            return response(Reply::text(StatusCode::NOT_FOUND, routes::not_found_text()));
        };
        // HEAD is GET without the body (hyper leaves the body out).
        let method = if parts.method == Method::HEAD {
            Method::GET
        } else {
            parts.method.clone()
        };
        let Some(route) = candidates.iter().find(|r| r.method == method) else {
            refused("method_not_allowed");
            let allowed: Vec<&str> = candidates.iter().map(|r| r.method.as_str()).collect();
            let mut answer = response(Reply::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed: {path} takes {}\n", allowed.join(", ")),
            ));
            if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                answer.headers_mut().insert(ALLOW, value);
            }
            return answer;
        };
        if !route.open {
            let config = self.shared.config.load();
            if let Some(token) = &config.server.admin_token {
                if !auth::bearer_matches(&parts.headers, token.expose()) {
                    refused("unauthorized");
                    let mut answer = response(Reply::text(StatusCode::UNAUTHORIZED, auth::REFUSAL));
                    answer
                        .headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return answer;
                }
            }
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                refused("bad_body");
                return response(Reply::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot read the request body (at most {MAX_BODY} bytes): {e}\n"),
                ));
            }
        };
        let call = Call {
            admin: self,
            query: parts.uri.query().map(str::to_string),
            body,
        };
        response((route.handler)(&call))
    }
}

fn response(reply: Reply) -> Response {
    let mut answer = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *answer.status_mut() = reply.status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    answer
}

/// Counts a request the endpoint refused, by reason.
fn refused(reason: &'static str) {
    metrics::counter!("sluice_admin_requests_refused_total", "reason" => reason).increment(1);
}
