//! Money requests and split bills: a member asks another member of a chat for money; a split
//! bill asks each member for a share and tracks who has paid. Nothing is held: money moves when
//! the payer pays, with their PIN, by a transfer id derived from the request (paying twice
//! moves it once). The request's status follows the ledger: once its transfer exists it is paid.

use anytime_ledger::{Account, AccountKind, Command, Posted};
use anytime_proto::limits::{REQUESTS_LISTED_MAX, REQUEST_TTL_MS, SPLIT_PEOPLE_MAX};
use anytime_proto::wallet::{MoneyRequestBody, MoneyRequestView, SplitBody, SplitView};
use anytime_proto::{ConvId, ErrorCode, UserId};
use anytime_wallet::request::{self, MoneyRequest, Status};
use anytime_wallet::{ids, purpose};

use super::{parse_money, store_failed, transfer_code, writer};
use crate::auth::store_code;
use crate::ServerCore;

fn view(r: &MoneyRequest, now: u64) -> MoneyRequestView {
    MoneyRequestView {
        id: format!("{:032x}", r.id),
        requester: r.requester,
        payer: r.payer,
        conv: r.conv,
        amount: r.currency.format(r.amount),
        currency: r.currency.code().into(),
        status: r.state(now).into(),
        expires_at_ms: r.expires_at_ms,
        split: r.split.map(|s| format!("{s:032x}")),
        transfer: (r.status == Status::Paid).then(|| format!("{:032x}", request::payment_transfer(r.id).0)),
    }
}

fn parse_id(id: &str) -> Result<u128, ErrorCode> {
    u128::from_str_radix(id, 16).map_err(|_| ErrorCode::InvalidArgument)
}

impl ServerCore {
    async fn members_of(&self, conv: ConvId) -> Result<Vec<UserId>, ErrorCode> {
        Ok(self.store.members(conv).await.map_err(store_code)?.into_iter().map(|m| m.user).collect())
    }

    /// Asks `payer`, a member of the chat, for money.
    pub async fn wallet_request(&self, token: &str, body: MoneyRequestBody) -> Result<MoneyRequestView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&body.key) || body.payer == user {
            return Err(ErrorCode::InvalidArgument);
        }
        let (currency, amount) = parse_money(&body.currency, &body.amount)?;
        let members = self.members_of(body.conv).await?;
        if !members.contains(&user) {
            return Err(ErrorCode::ConversationNotFound);
        }
        if !members.contains(&body.payer) {
            return Err(ErrorCode::NotMember);
        }
        self.wallet_rate(user)?;
        let now = self.env.now_ms();
        let made = MoneyRequest {
            id: ids::transfer_id(user, "request", &body.key).0,
            requester: user,
            payer: body.payer,
            conv: body.conv,
            currency,
            amount,
            split: None,
            created_at_ms: now,
            expires_at_ms: now + REQUEST_TTL_MS,
            status: Status::Open,
        };
        let wallet = self.wallet()?;
        if !wallet.store.create_requests(std::slice::from_ref(&made)).await.map_err(store_failed)? {
            return Err(ErrorCode::Duplicate);
        }
        let stored = wallet.store.request(made.id).await.map_err(store_failed)?.ok_or(ErrorCode::Internal)?;
        Ok(view(&stored, now))
    }

    /// Splits a bill: one request per person for their share (equal, or as given).
    pub async fn wallet_split(&self, token: &str, body: SplitBody) -> Result<SplitView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        if !ids::valid_key(&body.key) {
            return Err(ErrorCode::InvalidArgument);
        }
        let members = self.members_of(body.conv).await?;
        if !members.contains(&user) {
            return Err(ErrorCode::ConversationNotFound);
        }
        let shares: Vec<(UserId, u128)> = match (&body.total, body.shares.is_empty()) {
            (Some(total), true) => {
                let (_, total) = parse_money(&body.currency, total)?;
                let mut people: Vec<UserId> = Vec::new();
                for person in &body.people {
                    if !people.contains(person) {
                        people.push(*person);
                    }
                }
                if people.is_empty() || people.len() > SPLIT_PEOPLE_MAX {
                    return Err(ErrorCode::InvalidArgument);
                }
                people.iter().copied().zip(request::equal_shares(total, people.len())).collect()
            }
            (None, false) => {
                if body.shares.len() > SPLIT_PEOPLE_MAX {
                    return Err(ErrorCode::InvalidArgument);
                }
                let mut shares = Vec::new();
                for share in &body.shares {
                    shares.push((share.user, parse_money(&body.currency, &share.amount)?.1));
                }
                shares
            }
            _ => return Err(ErrorCode::InvalidArgument),
        };
        let currency = parse_money(&body.currency, "1")?.0;
        if shares.iter().any(|(u, _)| !members.contains(u)) {
            return Err(ErrorCode::NotMember);
        }
        if shares.iter().any(|(_, amount)| *amount == 0) {
            return Err(ErrorCode::InvalidAmount);
        }
        self.wallet_rate(user)?;
        let now = self.env.now_ms();
        let split = ids::transfer_id(user, "split", &body.key).0;
        let requests: Vec<MoneyRequest> = shares
            .iter()
            .filter(|(member, _)| *member != user)
            .map(|(member, amount)| MoneyRequest {
                id: request::split_request_id(split, *member),
                requester: user,
                payer: *member,
                conv: body.conv,
                currency,
                amount: *amount,
                split: Some(split),
                created_at_ms: now,
                expires_at_ms: now + REQUEST_TTL_MS,
                status: Status::Open,
            })
            .collect();
        if requests.is_empty() {
            return Err(ErrorCode::InvalidArgument);
        }
        if !self.wallet()?.store.create_requests(&requests).await.map_err(store_failed)? {
            return Err(ErrorCode::Duplicate);
        }
        self.split_view(split).await
    }

    async fn split_view(&self, split: u128) -> Result<SplitView, ErrorCode> {
        let requests = self.wallet()?.store.split_requests(split).await.map_err(store_failed)?;
        let first = requests.first().ok_or(ErrorCode::InvalidArgument)?;
        let now = self.env.now_ms();
        let paid: u128 = requests.iter().filter(|r| r.status == Status::Paid).map(|r| r.amount).sum();
        let asked: u128 = requests.iter().map(|r| r.amount).sum();
        Ok(SplitView {
            id: format!("{split:032x}"),
            requester: first.requester,
            currency: first.currency.code().into(),
            paid: first.currency.format(paid),
            asked: first.currency.format(asked),
            requests: requests.iter().map(|r| view(r, now)).collect(),
        })
    }

    /// A split bill's tracker, for the members of its chat.
    pub async fn wallet_split_view(&self, token: &str, id: &str) -> Result<SplitView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let split = self.split_view(parse_id(id)?).await?;
        let conv = split.requests.first().map(|r| r.conv).ok_or(ErrorCode::InvalidArgument)?;
        if !self.members_of(conv).await?.contains(&user) {
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(split)
    }

    async fn request_for(&self, user: UserId, id: &str) -> Result<MoneyRequest, ErrorCode> {
        let r = self
            .wallet()?
            .store
            .request(parse_id(id)?)
            .await
            .map_err(store_failed)?
            .ok_or(ErrorCode::InvalidArgument)?;
        if r.requester != user && r.payer != user {
            // Someone else's request looks exactly like one that does not exist.
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(r)
    }

    /// What the caller is asked to pay: open requests (and split-bill shares), newest first.
    pub async fn wallet_requests_of_mine(&self, token: &str) -> Result<Vec<MoneyRequestView>, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let now = self.env.now_ms();
        let open =
            self.wallet()?.store.open_requests_for(user, now, REQUESTS_LISTED_MAX).await.map_err(store_failed)?;
        Ok(open.iter().map(|r| view(r, now)).collect())
    }

    pub async fn wallet_request_view(&self, token: &str, id: &str) -> Result<MoneyRequestView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let r = self.request_for(user, id).await?;
        Ok(view(&r, self.env.now_ms()))
    }

    /// The payer pays the request (PIN, limits). Paying a paid request answers it again.
    pub async fn wallet_pay_request(&self, token: &str, id: &str, pin: &str) -> Result<MoneyRequestView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let r = self.request_for(user, id).await?;
        let now = self.env.now_ms();
        if r.payer != user {
            return Err(ErrorCode::InvalidArgument);
        }
        match r.state(now) {
            "paid" => return Ok(view(&r, now)),
            "open" => {}
            "expired" => return Err(ErrorCode::Expired),
            _ => return Err(ErrorCode::InvalidArgument),
        }
        self.wallet_rate(user)?;
        self.check_pin(user, pin).await?;
        let (from, to) = (ids::wallet(user, r.currency), ids::wallet(r.requester, r.currency));
        let commands = vec![
            Command::Open(Account::new(to, r.currency, AccountKind::Wallet, r.requester.0)),
            Command::Transfer {
                id: request::payment_transfer(r.id),
                debit: from,
                credit: to,
                amount: r.amount,
                currency: r.currency,
                code: purpose::REQUEST,
                reference: r.id,
                hold: None,
            },
        ];
        let spend = writer::Spend { account: from, currency: r.currency, amount: r.amount };
        match self.post(commands, Some(spend)).await?.into_iter().last() {
            Some(Ok(Posted::Transfer { .. })) => {
                // The money moved: the request is paid, whatever raced it (a decline loses).
                self.wallet()?.store.set_request_status(r.id, Status::Paid, false).await.map_err(store_failed)?;
                Ok(view(&MoneyRequest { status: Status::Paid, ..r }, now))
            }
            Some(Err(e)) => Err(transfer_code(e)),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// The payer declines, or the requester cancels, an open request.
    pub async fn wallet_close_request(&self, token: &str, id: &str) -> Result<MoneyRequestView, ErrorCode> {
        let user = self.authenticate(token).await?.user;
        let r = self.request_for(user, id).await?;
        let status = if r.payer == user { Status::Declined } else { Status::Cancelled };
        let now = self.env.now_ms();
        if r.state(now) != "open" {
            return Err(if r.state(now) == "expired" { ErrorCode::Expired } else { ErrorCode::InvalidArgument });
        }
        if !self.wallet()?.store.set_request_status(r.id, status, true).await.map_err(store_failed)? {
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(view(&MoneyRequest { status, ..r }, now))
    }
}
