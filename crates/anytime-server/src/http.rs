//! HTTP routes: account registration and login (JSON), the device WebSocket, health, metrics.

use std::net::SocketAddr;
use std::path::Path;

use anytime_proto::http::{ErrorBody, LoginRequest, RegisterRequest};
use std::sync::Arc;
use std::time::Duration;

use anytime_proto::limits::{HTTP_BODY_BYTES_MAX, HTTP_BODY_TIMEOUT_MS, WS_MESSAGE_BYTES_MAX};
use anytime_proto::ErrorCode;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::admission::Ticket;
use crate::AppState;

/// Initial WebSocket read buffer per connection, bytes.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// What the web client may load and talk to: scripts only from this origin, and wasm
/// compilation. Keys live in the page, so injected script must not run (no inline script, no
/// eval, no other origins). `connect-src` also allows http(s) pages: link previews are made by
/// the sender's browser, which fetches the page itself (the server never fetches a URL); that
/// is reading, not running, and only where the site allows it (CORS).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     connect-src 'self' ws: wss: https: http:; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; object-src 'none'; \
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
        .merge(crate::wallet_http::routes())
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        // After the small-body guard: uploads carry megabytes and check their own bound.
        .merge(crate::blob_http::routes())
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.core.metrics.render())
}

pub(crate) fn error_response(code: ErrorCode) -> Response {
    let status = match code {
        ErrorCode::InvalidCredentials | ErrorCode::InvalidToken | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::UsernameTaken | ErrorCode::Duplicate | ErrorCode::LedgerConflict => StatusCode::CONFLICT,
        ErrorCode::InsufficientFunds => StatusCode::PAYMENT_REQUIRED,
        ErrorCode::PinWrong | ErrorCode::LimitExceeded => StatusCode::FORBIDDEN,
        ErrorCode::PinLocked => StatusCode::LOCKED,
        ErrorCode::Expired => StatusCode::GONE,
        ErrorCode::UserNotFound | ErrorCode::BlobNotFound => StatusCode::NOT_FOUND,
        ErrorCode::OffsetMismatch | ErrorCode::BlobIncomplete | ErrorCode::UploadBusy => StatusCode::CONFLICT,
        ErrorCode::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyDevices | ErrorCode::TooManyConnections => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ShuttingDown | ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (status, Json(ErrorBody { code, message: code.description().to_owned() })).into_response();
    if matches!(code, ErrorCode::RateLimited | ErrorCode::ServerBusy) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if matches!(code, ErrorCode::PayloadTooLarge | ErrorCode::RequestTimeout) {
        // The rest of the body is not read: the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Answers 413 from the declared `Content-Length` before reading any of the body: a client
/// announcing a terabyte hears so at once instead of being waited on.
async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > HTTP_BODY_BYTES_MAX as u64) {
        return error_response(ErrorCode::PayloadTooLarge);
    }
    next.run(request).await
}

/// Reads and parses a JSON body within `HTTP_BODY_TIMEOUT_MS` and `HTTP_BODY_BYTES_MAX`;
/// failures get our own error shape (`request_timeout`, `payload_too_large`,
/// `invalid_argument`) instead of axum's plain-text rejection.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ErrorCode> {
    let read = axum::body::to_bytes(body, HTTP_BODY_BYTES_MAX as usize);
    let body = match tokio::time::timeout(Duration::from_millis(HTTP_BODY_TIMEOUT_MS), read).await {
        Err(_) => return Err(ErrorCode::RequestTimeout),
        Ok(Err(_)) => return Err(ErrorCode::PayloadTooLarge),
        Ok(Ok(body)) => body,
    };
    serde_json::from_slice(&body).map_err(|_| ErrorCode::InvalidArgument)
}

async fn register(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Body) -> Response {
    let request: RegisterRequest = match read_json(body).await {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.register(peer.ip(), request).await {
        Ok(session) => (StatusCode::CREATED, Json(session)).into_response(),
        Err(code) => error_response(code),
    }
}

async fn login(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Body) -> Response {
    let request: LoginRequest = match read_json(body).await {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    let username = request.username.clone();
    match state.core.login(peer.ip(), request).await {
        Ok(session) => Json(session).into_response(),
        Err(ErrorCode::RateLimited) => {
            let mut response = error_response(ErrorCode::RateLimited);
            let wait = state.core.login_retry_after_secs(&username, peer.ip());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            response
        }
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

/// The session token of `Authorization: Bearer <token>` (empty when absent: refused as invalid).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

/// Registers the calling device's push endpoint (`Authorization: Bearer <session token>`).
async fn push_endpoint(State(state): State<AppState>, headers: axum::http::HeaderMap, body: Body) -> Response {
    let token = bearer(&headers);
    let request: PushEndpointRequest = match read_json(body).await {
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
    Extension(ticket): Extension<Arc<Ticket>>,
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
            crate::ws::run(socket, state.core, peer.ip(), ticket, state.shutdown).await;
            drop(permit);
        })
}
