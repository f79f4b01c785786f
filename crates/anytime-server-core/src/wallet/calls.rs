//! The wallet over the WebSocket: one `WalletOp` in a `WalletCall` frame runs exactly what its
//! HTTP route runs (the same `ServerCore` method, authenticated again with the session's token, so
//! a session revoked meanwhile cannot pay), and the answer comes back as a `WalletReply`.

use anytime_proto::wallet::{WalletOp, WalletReply};
use anytime_proto::ErrorCode;

use crate::ServerCore;

impl ServerCore {
    pub async fn wallet_call(&self, token: &str, op: WalletOp) -> Result<WalletReply, ErrorCode> {
        use WalletOp as Op;
        use WalletReply as R;
        Ok(match op {
            Op::Summary => R::Summary(self.wallet_summary(token).await?),
            Op::SetPin(request) => {
                self.wallet_set_pin(token, request).await?;
                R::Done
            }
            Op::TopUp(request) => R::TopUp(self.wallet_top_up(token, request).await?),
            Op::ConfirmTopUp(confirm) => R::TopUp(self.wallet_confirm_top_up(token, confirm).await?),
            Op::Pay(request) => R::Transfer(self.wallet_pay(token, request).await?),
            Op::Payout(request) => R::Payout(self.wallet_payout(token, request).await?),
            Op::History { currency, before, limit } => {
                R::History(self.wallet_history(token, &currency, before.as_deref(), limit).await?)
            }
            Op::Transfer { id } => R::Transfer(self.wallet_transfer(token, &id).await?),
            Op::CreateEnvelope(request) => R::Envelope(self.wallet_create_envelope(token, request).await?),
            Op::Envelope { id } => R::Envelope(self.wallet_envelope(token, &id).await?),
            Op::GrabEnvelope { id } => R::Grab(self.wallet_grab_envelope(token, &id).await?),
            Op::CreateRequest(body) => R::Request(self.wallet_request(token, body).await?),
            Op::RequestsOfMine => R::Requests(self.wallet_requests_of_mine(token).await?),
            Op::Request { id } => R::Request(self.wallet_request_view(token, &id).await?),
            Op::PayRequest { id, pin } => R::Request(self.wallet_pay_request(token, &id, &pin).await?),
            Op::CloseRequest { id } => R::Request(self.wallet_close_request(token, &id).await?),
            Op::CreateSplit(body) => R::Split(self.wallet_split(token, body).await?),
            Op::Split { id } => R::Split(self.wallet_split_view(token, &id).await?),
        })
    }
}
