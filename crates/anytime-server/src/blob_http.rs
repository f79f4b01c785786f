//! The attachment endpoints (docs/protocol.md, "Attachments"): authenticate with the session
//! token, decode, call `ServerCore`, encode; downloads stream the sealed bytes in pieces with
//! HTTP range requests. Every rule is in the core and `anytime-media`.

use std::time::Duration;

use anytime_media::blob::{self, RangeError};
use anytime_proto::blob::NewBlob;
use anytime_proto::limits::{BLOB_UPLOAD_BYTES_MAX, BLOB_UPLOAD_TIMEOUT_MS};
use anytime_proto::ErrorCode;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::blob_fs::READ_BYTES_MAX;
use crate::http::{bearer, error_response, read_json};
use crate::AppState;

/// Routes outside the small-body guard of the other endpoints: uploads carry up to
/// `BLOB_UPLOAD_BYTES_MAX` and check it themselves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/blobs", post(create))
        .route("/v1/blobs/{id}", get(download).put(upload))
        .route("/v1/blobs/{id}/status", get(status))
        .route("/v1/blobs/{id}/fetched", post(fetched))
}

async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request: NewBlob = match read_json(body).await {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.blob_create(&bearer(&headers), request).await {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(code) => error_response(code),
    }
}

async fn status(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match state.core.blob_status(&bearer(&headers), &id).await {
        Ok(status) => Json(status).into_response(),
        Err(code) => error_response(code),
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    offset: u64,
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Response {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BLOB_UPLOAD_BYTES_MAX) {
        return error_response(ErrorCode::PayloadTooLarge);
    }
    // The body is written only whole: a connection cut mid-body leaves the upload where it was.
    let read = axum::body::to_bytes(body, BLOB_UPLOAD_BYTES_MAX as usize);
    let bytes = match tokio::time::timeout(Duration::from_millis(BLOB_UPLOAD_TIMEOUT_MS), read).await {
        Err(_) => return error_response(ErrorCode::RequestTimeout),
        Ok(Err(_)) => return error_response(ErrorCode::PayloadTooLarge),
        Ok(Ok(bytes)) => bytes,
    };
    match state.core.blob_upload(&bearer(&headers), &id, query.offset, &bytes).await {
        Ok(status) => Json(status).into_response(),
        Err(code) => error_response(code),
    }
}

async fn fetched(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match state.core.blob_fetched(&bearer(&headers), &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(code) => error_response(code),
    }
}

/// The sealed bytes, whole (200) or one range (206), streamed from the byte store piece by piece
/// so a large blob never sits in memory.
async fn download(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let record = match state.core.blob_open(&bearer(&headers), &id).await {
        Ok(record) => record,
        Err(code) => return error_response(code),
    };
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match blob::range(asked, record.size) {
        Ok(range) => range,
        Err(RangeError::Unsatisfiable) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", record.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
        Err(RangeError::Malformed) => return error_response(ErrorCode::InvalidArgument),
    };
    let (start, end, code) = match &range {
        Some(r) => (r.start, r.end, StatusCode::PARTIAL_CONTENT),
        None => (0, record.size, StatusCode::OK),
    };
    let core = state.core.clone();
    let id = record.id;
    let pieces = futures_util::stream::unfold(start, move |at| {
        let core = core.clone();
        async move {
            if at >= end {
                return None;
            }
            match core.blob_read(id, at, (end - at).min(READ_BYTES_MAX)).await {
                Ok(piece) if piece.is_empty() => {
                    tracing::error!(blob = %blob::id_to_hex(id), at, "blob bytes end before its recorded size");
                    Some((Err(std::io::Error::other("blob truncated")), end))
                }
                Ok(piece) => {
                    let next = at + piece.len() as u64;
                    Some((Ok(bytes::Bytes::from(piece)), next))
                }
                Err(code) => Some((Err(std::io::Error::other(code.as_str())), end)),
            }
        }
    });
    let mut response = Response::new(Body::from_stream(pieces));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Sealed bytes never change: a client may keep them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    if let Ok(value) = HeaderValue::from_str(&(end - start).to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if range.is_some() {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, record.size)) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    response
}
