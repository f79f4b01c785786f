//! The wallet's HTTP/JSON endpoints (docs/protocol.md, "Wallet"): authenticate with the session
//! token, decode, call `ServerCore`, encode. Every rule is in the core and the wallet crates.

use anytime_proto::wallet::{
    EnvelopeRequest, MoneyRequestBody, PayRequest, PayRequestBody, PayoutRequest, PinRequest, SplitBody, TopUpConfirm,
    TopUpRequest,
};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::http::{bearer, error_response, read_json};
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/wallet", get(summary))
        .route("/v1/wallet/pin", post(set_pin))
        .route("/v1/wallet/top-up", post(top_up))
        .route("/v1/wallet/top-up/confirm", post(confirm_top_up))
        .route("/v1/wallet/pay", post(pay))
        .route("/v1/wallet/payouts", post(payout))
        .route("/v1/wallet/history", get(history))
        .route("/v1/wallet/transfers/{id}", get(transfer))
        .route("/v1/wallet/envelopes", post(create_envelope))
        .route("/v1/wallet/envelopes/{id}", get(envelope))
        .route("/v1/wallet/envelopes/{id}/grab", post(grab))
        .route("/v1/wallet/requests", post(create_request).get(requests_of_mine))
        .route("/v1/wallet/requests/{id}", get(request))
        .route("/v1/wallet/requests/{id}/pay", post(pay_request))
        .route("/v1/wallet/requests/{id}/close", post(close_request))
        .route("/v1/wallet/splits", post(create_split))
        .route("/v1/wallet/splits/{id}", get(split))
}

fn answer<T: serde::Serialize>(result: Result<T, anytime_proto::ErrorCode>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(code) => error_response(code),
    }
}

async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(state.core.wallet_summary(&bearer(&headers)).await)
}

async fn set_pin(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let request: PinRequest = match read_json(body).await {
        Ok(request) => request,
        Err(code) => return error_response(code),
    };
    match state.core.wallet_set_pin(&bearer(&headers), request).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(code) => error_response(code),
    }
}

async fn top_up(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<TopUpRequest>(body).await {
        Ok(request) => answer(state.core.wallet_top_up(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

async fn confirm_top_up(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<TopUpConfirm>(body).await {
        Ok(request) => answer(state.core.wallet_confirm_top_up(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

async fn pay(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<PayRequest>(body).await {
        Ok(request) => answer(state.core.wallet_pay(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

async fn payout(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<PayoutRequest>(body).await {
        Ok(request) => answer(state.core.wallet_payout(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    currency: String,
    before: Option<String>,
    limit: Option<u32>,
    /// `csv` for a spreadsheet export of this page.
    format: Option<String>,
}

async fn history(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<HistoryQuery>) -> Response {
    let page = state
        .core
        .wallet_history(&bearer(&headers), &query.currency, query.before.as_deref(), query.limit.unwrap_or(50))
        .await;
    match (page, query.format.as_deref()) {
        (Ok(page), Some("csv")) => {
            let mut csv = String::from("id,time_ms,direction,purpose,counterparty,amount,currency\n");
            for t in &page.transfers {
                let other = t.counterparty.map(|u| u.to_string()).unwrap_or_default();
                csv.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    t.id, t.at_ms, t.direction, t.purpose, other, t.amount, t.currency
                ));
            }
            let disposition =
                format!("attachment; filename=\"anytime-wallet-{}.csv\"", query.currency.to_ascii_uppercase());
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                csv,
            )
                .into_response()
        }
        (Ok(page), _) => Json(page).into_response(),
        (Err(code), _) => error_response(code),
    }
}

async fn transfer(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_transfer(&bearer(&headers), &id).await)
}

async fn create_envelope(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<EnvelopeRequest>(body).await {
        Ok(request) => answer(state.core.wallet_create_envelope(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

async fn envelope(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_envelope(&bearer(&headers), &id).await)
}

async fn grab(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_grab_envelope(&bearer(&headers), &id).await)
}

async fn create_request(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<MoneyRequestBody>(body).await {
        Ok(request) => answer(state.core.wallet_request(&bearer(&headers), request).await),
        Err(code) => error_response(code),
    }
}

async fn requests_of_mine(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(state.core.wallet_requests_of_mine(&bearer(&headers)).await)
}

async fn request(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_request_view(&bearer(&headers), &id).await)
}

async fn pay_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    match read_json::<PayRequestBody>(body).await {
        Ok(pay) => answer(state.core.wallet_pay_request(&bearer(&headers), &id, &pay.pin).await),
        Err(code) => error_response(code),
    }
}

async fn close_request(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_close_request(&bearer(&headers), &id).await)
}

async fn create_split(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match read_json::<SplitBody>(body).await {
        Ok(split) => answer(state.core.wallet_split(&bearer(&headers), split).await),
        Err(code) => error_response(code),
    }
}

async fn split(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(state.core.wallet_split_view(&bearer(&headers), &id).await)
}
