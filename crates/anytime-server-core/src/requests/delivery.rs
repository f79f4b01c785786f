//! Delivery handlers: commits (with their Welcomes), pipelined sends and their completion,
//! acknowledgements of messages and Welcomes, and typing notices.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use anytime_proto::frame::{self, ConvKind, MessageKind};
use anytime_proto::limits::{HANDSHAKE_BYTES_MAX, MESSAGE_BYTES_MAX};
use anytime_proto::{encode_server, ConvId, DeviceId, ErrorCode, ServerFrame, UserId};
use bytes::Bytes;

use super::check_len;
use crate::env::EnvExt;
use crate::hub::Push;
use crate::session::{Answer, Completed, Outcome, PendingRequest, Reject, Session};
use crate::store::{NewCommit, NewMessage, NewWelcome};

impl Session {
    pub(super) async fn commit(&mut self, request: frame::Commit) -> Answer {
        check_len(request.commit.len(), HANDSHAKE_BYTES_MAX)?;
        let route = self.core.route(request.conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        if !route.has_member(self.user()) {
            return Err(ErrorCode::ConversationNotFound.into());
        }
        let welcome = match request.welcome {
            None => None,
            Some(welcome) => {
                check_len(welcome.payload.len(), HANDSHAKE_BYTES_MAX)?;
                let members: HashSet<DeviceId> = route.recipients.iter().map(|(_, d)| *d).collect();
                if welcome.devices.is_empty() || welcome.devices.iter().any(|d| !members.contains(d)) {
                    // A Welcome goes only to devices of members (added to the group first).
                    return Err(ErrorCode::InvalidArgument.into());
                }
                Some(NewWelcome { id: self.core.env.random_u64(), devices: welcome.devices, payload: welcome.payload })
            }
        };
        let at_ms = self.core.env.now_ms();
        let commit = NewCommit {
            conv: request.conv,
            epoch: request.epoch,
            sender: self.user(),
            sender_device: self.device(),
            msg_id: request.msg_id,
            commit: request.commit.clone(),
            welcome: welcome.clone(),
            at_ms,
        };
        let accepted = self.core.store.append_commit(commit).await?;
        if !accepted.duplicate {
            self.core.metrics.commits_in.fetch_add(1, Relaxed);
            let message = frame::Message {
                conv: request.conv,
                seq: accepted.seq,
                sender: self.user(),
                sender_device: self.device(),
                msg_id: request.msg_id,
                kind: MessageKind::Commit { epoch: request.epoch },
                sent_at_ms: at_ms,
                payload: request.commit,
            };
            self.publish(&route.recipients, message);
            if let Some(welcome) = welcome {
                let frame = frame::Welcome { welcome: welcome.id, conv: request.conv, payload: welcome.payload };
                let bytes = Bytes::from(encode_server(0, &ServerFrame::Welcome(frame)));
                self.core.push(&welcome.devices, &Push::Frame(bytes));
            }
        }
        Ok(Some(ServerFrame::Committed(frame::Committed {
            seq: accepted.seq,
            epoch: accepted.epoch,
            duplicate: accepted.duplicate,
        })))
    }

    /// The route of a conversation the caller may deliver into: a member, and in a direct chat
    /// not blocked by the peer. (In a group the members' clients hide a blocked sender: the MLS
    /// group still needs every message in order.)
    async fn deliverable_route(&self, conv: ConvId) -> Result<std::sync::Arc<crate::hub::Route>, Reject> {
        let route = self.core.route(conv).await?.ok_or(ErrorCode::ConversationNotFound)?;
        if !route.has_member(self.user()) {
            return Err(ErrorCode::ConversationNotFound.into());
        }
        if route.kind == ConvKind::Direct {
            let peer = route.recipients.iter().map(|(u, _)| *u).find(|u| *u != self.user());
            if let Some(peer) = peer {
                if self.core.is_blocked(peer, self.user()).await? {
                    return Err(ErrorCode::Blocked.into());
                }
            }
        }
        Ok(route)
    }

    /// Validates a send and queues it for storage; the returned future completes once it is
    /// durable, and `Session::on_completed` then publishes it and answers.
    pub(crate) async fn submit_send(
        &mut self,
        request_id: u32,
        request: frame::Send,
        silent: bool,
    ) -> Result<PendingRequest, Reject> {
        let frame::Send { conv, msg_id, payload } = request;
        check_len(payload.len(), MESSAGE_BYTES_MAX)?;
        let route = self.deliverable_route(conv).await?;
        let at_ms = self.core.env.now_ms();
        let stored = NewMessage {
            conv,
            sender: self.user(),
            sender_device: self.device(),
            msg_id,
            payload: payload.clone(),
            at_ms,
        };
        let pending = self.core.store.submit_message(stored).await?;
        let message = frame::Message {
            conv,
            seq: 0, // Known once stored.
            sender: self.user(),
            sender_device: self.device(),
            msg_id,
            kind: MessageKind::Application,
            sent_at_ms: at_ms,
            payload,
        };
        Ok(Box::pin(async move {
            let result = pending.await;
            Completed { request_id, outcome: Outcome::Sent { route, message, result, silent } }
        }))
    }

    /// A pipelined request finished: publish and answer.
    pub async fn on_completed(&mut self, completed: Completed) -> crate::Flow {
        let Completed { request_id, outcome } = completed;
        match outcome {
            Outcome::Sent { route, mut message, result, silent } => match result {
                Ok(appended) => {
                    let sender_device = message.sender_device;
                    if !appended.duplicate {
                        self.core.metrics.messages_in.fetch_add(1, Relaxed);
                        message.seq = appended.seq;
                        self.publish(&route.recipients, message);
                    }
                    let sent = frame::Sent { seq: appended.seq, duplicate: appended.duplicate };
                    self.send_frame(request_id, &ServerFrame::Sent(sent)).await;
                    if !appended.duplicate && !silent {
                        self.core.wake_offline(&route.recipients, sender_device).await;
                    }
                }
                Err(error) => self.reject(request_id, error.into()).await,
            },
        }
        crate::Flow::Continue
    }

    /// Encodes the message once and hands it to every recipient device's connections.
    fn publish(&self, recipients: &[(UserId, DeviceId)], message: frame::Message) {
        let (conv, seq) = (message.conv, message.seq);
        let frame = Bytes::from(encode_server(0, &ServerFrame::Message(message)));
        let push = Push::Message { conv, seq, frame };
        self.core.push(recipients.iter().map(|(_, d)| d), &push);
    }

    pub(super) async fn ack(&mut self, conv: ConvId, seq: u64) -> Answer {
        let delivered = self.auth.as_ref().and_then(|a| a.delivered.get(&conv).copied());
        match delivered {
            None => Err(ErrorCode::ConversationNotFound.into()),
            Some(last) if seq > last => Err(ErrorCode::InvalidArgument.into()),
            Some(_) => {
                // Acks need no answer: queue them in order and move on. The latest is awaited
                // when the connection closes, so a quick reconnect sees it.
                let pending = self.core.store.submit_ack(self.device(), conv, seq).await?;
                self.last_ack = Some(pending);
                Ok(None)
            }
        }
    }

    pub(super) async fn ack_welcome(&mut self, welcome: u64) -> Answer {
        self.core.store.ack_welcome(self.device(), welcome).await?;
        Ok(None)
    }

    pub(super) async fn typing(&mut self, conv: ConvId) -> Answer {
        let route = self.deliverable_route(conv).await?;
        let event = frame::TypingEvent { conv, user: self.user(), device: self.device() };
        let bytes = Bytes::from(encode_server(0, &ServerFrame::TypingEvent(event)));
        let me = self.device();
        let targets = route.recipients.iter().map(|(_, d)| d).filter(|d| **d != me);
        self.core.push(targets, &Push::Frame(bytes));
        Ok(None)
    }
}
