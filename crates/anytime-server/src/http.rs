//! HTTP routes: account registration and login (JSON), the device WebSocket, health, metrics.

use std::net::SocketAddr;
use std::path::Path;

use anytime_proto::http::{ErrorBody, LoginRequest, RegisterRequest};
use anytime_proto::limits::{HTTP_BODY_BYTES_MAX, WS_MESSAGE_BYTES_MAX};
use anytime_proto::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;

/// Initial WebSocket read buffer per connection, bytes.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// What the web client may load and talk to: only this origin, and wasm compilation. Keys live
/// in the page, so injected script must not run (no inline script, no eval, no other origins).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

pub(crate) fn router(state: AppState, web_dir: Option<&Path>) -> Router {
    let router = match web_dir {
        // Layers wrap only what is already in the router: the static files, not the API below.
        Some(dir) => Router::new()
            .fallback_service(ServeDir::new(dir).precompressed_gzip())
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ))
            .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )),
        None => Router::new().route("/", get(index)),
    };
    router
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/ws", get(websocket))
        .route("/v1/push/key", get(push_key))
        .route("/v1/push/endpoint", post(push_endpoint))
        .layer(DefaultBodyLimit::max(HTTP_BODY_BYTES_MAX as usize))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.core.metrics.render())
}

fn error_response(code: ErrorCode) -> Response {
    let status = match code {
        ErrorCode::InvalidCredentials | ErrorCode::InvalidToken | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::UsernameTaken => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyDevices | ErrorCode::TooManyConnections => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(ErrorBody { code, message: code.description().to_owned() })).into_response()
}

/// Parses a JSON body; a body over the limit or not JSON is answered with our own error shape
/// (`payload_too_large`, `invalid_argument`) instead of axum's plain-text rejection.
fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ErrorCode> {
    let body = body.map_err(|_| ErrorCode::PayloadTooLarge)?;
    serde_json::from_slice(&body).map_err(|_| ErrorCode::InvalidArgument)
}

async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: RegisterRequest = match parse(body) {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.register(peer.ip(), request).await {
        Ok(session) => (StatusCode::CREATED, Json(session)).into_response(),
        Err(code) => error_response(code),
    }
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: LoginRequest = match parse(body) {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.login(peer.ip(), request).await {
        Ok(session) => Json(session).into_response(),
        Err(code) => error_response(code),
    }
}

/// The VAPID public key a browser subscribes with (`applicationServerKey`).
async fn push_key(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({"public_key": state.vapid.public_key})).into_response()
}

#[derive(serde::Deserialize)]
struct PushEndpointRequest {
    /// The push subscription's endpoint; `null` stops pushes to this device.
    endpoint: Option<String>,
}

/// Registers the calling device's push endpoint (`Authorization: Bearer <session token>`).
async fn push_endpoint(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let request: PushEndpointRequest = match parse(body) {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.set_push_endpoint(&token, request.endpoint).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(code) => error_response(code),
    }
}

async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *state.shutdown.borrow() {
        return error_response(ErrorCode::ShuttingDown);
    }
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return error_response(ErrorCode::TooManyConnections);
    };
    // tungstenite allocates its read buffer per connection up front (128 KiB by default); most
    // frames are a few hundred bytes, and larger ones still arrive in several reads.
    upgrade
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(WS_MESSAGE_BYTES_MAX as usize)
        .max_frame_size(WS_MESSAGE_BYTES_MAX as usize)
        .on_upgrade(move |socket| async move {
            crate::ws::run(socket, state.core, peer.ip(), state.shutdown).await;
            drop(permit);
        })
}
