//! The client core's `Transport` over the browser's WebSocket: answers are matched to requests
//! by request id, pushes (request id 0) queue in arrival order. Before any frame leaves, the
//! local store is flushed to IndexedDB (see `persist`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anytime_client::{ClientError, StoreError, Transport};
use anytime_proto::{codec, frame, ClientFrame, ServerFrame};
use async_trait::async_trait;
use futures_channel::{mpsc, oneshot};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::persist::Persist;
use crate::sleep;

/// How long a request may wait for its answer before the connection counts as broken.
const ANSWER_TIMEOUT_MS: u64 = 30_000;

type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<ServerFrame>>>>;

pub struct WsTransport {
    socket: WebSocket,
    pending: Pending,
    pub pushes: mpsc::Receiver<ServerFrame>,
    next_id: u32,
    persist: Rc<Persist>,
    // Kept alive as long as the socket: the browser calls them.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
}

/// Pushes received but not yet handled by the session.
const PUSH_QUEUE_LEN_MAX: usize = 4_096;

fn transport(text: impl Into<String>) -> ClientError {
    ClientError::Transport(text.into())
}

impl WsTransport {
    /// Opens the socket and authenticates with `Hello`.
    pub async fn connect(url: &str, token: &str, persist: Rc<Persist>) -> Result<WsTransport, ClientError> {
        let socket = WebSocket::new(url).map_err(|e| transport(format!("cannot open {url}: {e:?}")))?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let pending: Pending = Rc::default();
        let (mut push_tx, pushes) = mpsc::channel(PUSH_QUEUE_LEN_MAX);
        let (open_tx, open_rx) = oneshot::channel::<bool>();
        let open_tx = Rc::new(RefCell::new(Some(open_tx)));

        let on_message = {
            let pending = pending.clone();
            let mut push_tx = push_tx.clone();
            let socket = socket.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Ok(buffer) = event.data().dyn_into::<ArrayBuffer>() else { return };
                let bytes = Uint8Array::new(&buffer).to_vec();
                // A frame this build cannot decode (newer server) is skipped, not fatal.
                let Ok((id, frame)) = codec::decode_server(&bytes) else { return };
                if id == 0 {
                    if let Err(error) = push_tx.try_send(frame) {
                        if error.is_full() {
                            // The page fell this far behind: drop the connection rather than
                            // queue without bound; the session reconnects and resumes from
                            // the server's copy (nothing is acknowledged that was not handled).
                            let _ = socket.close_with_code_and_reason(4000, "client behind");
                        }
                    }
                } else if let Some(waiter) = pending.borrow_mut().remove(&id) {
                    let _ = waiter.send(frame);
                }
            })
        };
        let on_close = {
            let pending = pending.clone();
            let open_tx = open_tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
                if let Some(tx) = open_tx.borrow_mut().take() {
                    let _ = tx.send(false);
                }
                // Waiting requests fail; the push stream ends.
                pending.borrow_mut().clear();
                push_tx.close_channel();
            })
        };
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(true);
            }
        });
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let opened = open_rx.await.unwrap_or(false);
        socket.set_onopen(None);
        drop(on_open);
        if !opened {
            return Err(transport(format!("could not connect to {url}")));
        }
        let mut ws =
            WsTransport { socket, pending, pushes, next_id: 0, persist, _on_message: on_message, _on_close: on_close };
        match ws.request(frame::Hello { token: token.to_owned() }.into()).await? {
            ServerFrame::HelloOk(_) => Ok(ws),
            ServerFrame::Error(error) => Err(ClientError::Server { code: error.code }),
            other => Err(ClientError::Protocol(format!("Hello answered {other:?}"))),
        }
    }

    fn send_frame(&mut self, frame: &ClientFrame) -> Result<u32, ClientError> {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let bytes = codec::encode_client(self.next_id, frame);
        self.socket.send_with_u8_array(&bytes).map_err(|e| transport(format!("send failed: {e:?}")))?;
        Ok(self.next_id)
    }

    async fn flush(&self) -> Result<(), ClientError> {
        self.persist.flush().await.map_err(|e| ClientError::Store(StoreError(e)))
    }

    pub fn close(&self) {
        let _ = self.socket.close();
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

#[async_trait(?Send)]
impl Transport for WsTransport {
    async fn request(&mut self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        self.flush().await?;
        let (tx, rx) = oneshot::channel();
        let id = self.send_frame(&frame)?;
        self.pending.borrow_mut().insert(id, tx);
        match select(rx, Box::pin(sleep(ANSWER_TIMEOUT_MS))).await {
            Either::Left((Ok(answer), _)) => Ok(answer),
            Either::Left((Err(_), _)) => Err(transport("the connection closed")),
            Either::Right(_) => {
                self.pending.borrow_mut().remove(&id);
                self.close();
                Err(transport("the server did not answer in time"))
            }
        }
    }

    async fn notify(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        self.flush().await?;
        self.send_frame(&frame).map(|_| ())
    }

    async fn next_push(&mut self, wait_ms: u64) -> Result<Option<ServerFrame>, ClientError> {
        match select(self.pushes.next(), Box::pin(sleep(wait_ms))).await {
            Either::Left((Some(push), _)) => Ok(Some(push)),
            Either::Left((None, _)) => Err(transport("the connection closed")),
            Either::Right(_) => Ok(None),
        }
    }
}
