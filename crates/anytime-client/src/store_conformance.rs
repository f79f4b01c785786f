//! The cases every [`ClientStore`] must pass (feature `conformance`): the in-memory store runs
//! them in this crate's tests, the terminal client's SQLite store in its own. The history case
//! feeds one script of events to the store and to a [`Timeline`] and requires the same entries:
//! a store may keep history its own way, but it applies the client core's rules.
//!
//! Each case takes a fresh store whose clock reads [`NOW_MS`].

use anytime_proto::{ConvId, DeviceId, MsgId, UserId};

use crate::client::{Changes, ClientStore, Event, OutboxEntry, Record};
use crate::content::{self, Content, ReceiptKind};
use crate::e2ee::DeviceIdentity;
use crate::timeline::{Effect, Timeline};

/// What the store's clock must read during a case.
pub const NOW_MS: u64 = 1_700_000_000_000;

const CONV: ConvId = ConvId(7);
const ME: UserId = UserId(1);

/// Runs every case, each on a store from `fresh`.
pub fn run_all<S: ClientStore>(mut fresh: impl FnMut() -> S) {
    last_seq_only_moves_forward(&mut fresh());
    outbox_keeps_order_and_content_once_per_message(&mut fresh());
    history_follows_the_timeline_rules(&mut fresh());
    history_limit_keeps_the_newest(&mut fresh());
    local_changes_star_and_hide(&mut fresh());
}

fn record<S: ClientStore>(store: &mut S, seq: u64, event: Option<&Event>) {
    let changes = Changes { record: Some(Record { conv: CONV, seq, event }), ..Changes::default() };
    store.save(changes).expect("save a record");
}

pub fn last_seq_only_moves_forward<S: ClientStore>(store: &mut S) {
    assert_eq!(store.last_seq(CONV).expect("last_seq"), 0, "nothing processed yet");
    record(store, 5, None);
    assert_eq!(store.last_seq(CONV).expect("last_seq"), 5);
    record(store, 3, None);
    assert_eq!(store.last_seq(CONV).expect("last_seq"), 5, "a late record does not move the cursor back");
    record(store, 0, Some(&message(0, 1, ME, true, text("own send"))));
    assert_eq!(store.last_seq(CONV).expect("last_seq"), 5, "own sends (seq 0) do not move it");
    assert_eq!(store.last_seq(ConvId(8)).expect("last_seq"), 0, "cursors are per conversation");
}

/// Queued again under the same id (encrypted anew, after the group was replaced), a message
/// keeps its place and holds the newest ciphertext: the one that will be sent.
pub fn outbox_keeps_order_and_content_once_per_message<S: ClientStore>(store: &mut S) {
    let (first, second) = (text("first"), text("second"));
    store.save(queue(1, &first, b"c1")).expect("queue 1");
    store.save(queue(2, &second, b"c2")).expect("queue 2");
    store.save(queue(1, &first, b"c1 again")).expect("queue 1 again");
    let queued = store.outbox().expect("outbox");
    let summary: Vec<_> = queued.iter().map(|q| (q.msg_id, q.ciphertext.clone(), q.content.clone())).collect();
    assert_eq!(
        summary,
        vec![(MsgId([1; 16]), b"c1 again".to_vec(), Some(first)), (MsgId([2; 16]), b"c2".to_vec(), Some(second))],
        "in the order first queued, once each, the newest ciphertext, with what they say"
    );
    store.save(Changes { outbox_remove: Some(MsgId([1; 16])), ..Changes::default() }).expect("remove");
    store.save(Changes { outbox_remove: Some(MsgId([9; 16])), ..Changes::default() }).expect("remove unknown");
    let left: Vec<_> = store.outbox().expect("outbox").iter().map(|q| q.msg_id).collect();
    assert_eq!(left, vec![MsgId([2; 16])]);
}

fn queue<'a>(msg_id: u8, content: &'a Content, ciphertext: &'a [u8]) -> Changes<'a> {
    let entry = OutboxEntry { conv: CONV, msg_id: MsgId([msg_id; 16]), ciphertext, content };
    Changes { outbox_add: Some(entry), ..Changes::default() }
}

/// Every rule of the timeline in one script: the store's history must equal the timeline's.
pub fn history_follows_the_timeline_rules<S: ClientStore>(store: &mut S) {
    let (bob, carol) = (UserId(2), UserId(3));
    let id = |n: u8| MsgId([n; 16]);
    let events = vec![
        message(1, 1, bob, false, text("hi")),
        message(2, 2, carol, false, Content::Edit(content::Edit { to: id(1), body: "forged".into() })),
        message(3, 3, bob, false, Content::Edit(content::Edit { to: id(1), body: "hello".into() })),
        message(4, 4, carol, false, reaction(id(1), "👍", false)),
        message(5, 5, carol, false, reaction(id(1), &"x".repeat(65), false)),
        message(6, 6, bob, false, reaction(id(1), "🎉", false)),
        message(7, 7, bob, false, reaction(id(1), "🎉", true)),
        // Own message sent (seq 0, sent_at 0: the store stamps it), then back with its seq.
        message(0, 8, ME, true, text("mine")),
        message(9, 8, ME, true, text("mine")),
        message(10, 10, bob, false, receipt(ReceiptKind::Delivered, vec![id(8)])),
        message(11, 11, carol, false, receipt(ReceiptKind::Read, vec![id(8), id(1)])),
        message(12, 12, bob, false, Content::Reply(content::Reply { to: id(8), body: "re".into(), mentions: vec![] })),
        message(13, 13, bob, false, Content::Timer(content::Timer { seconds: 3_600 })),
        message(14, 14, carol, false, text("soon gone")),
        message(15, 15, bob, false, Content::Delete(content::Delete { to: id(12) })),
        message(16, 16, carol, false, Content::Delete(content::Delete { to: id(14) })),
        message(17, 17, bob, false, Content::Edit(content::Edit { to: id(12), body: "after delete".into() })),
        message(18, 18, bob, false, Content::Unsupported { kind: 99 }),
        message(19, 19, carol, false, Content::Timer(content::Timer { seconds: 0 })),
        Event::Undecryptable { conv: CONV, seq: 20, sender: bob, reason: "no key".into() },
        Event::DeviceRepaired { conv: CONV, device: DeviceIdentity { user: bob, device: DeviceId(20) }, epoch: 4 },
        Event::DeviceRepaired { conv: CONV, device: DeviceIdentity { user: bob, device: DeviceId(20) }, epoch: 4 },
        Event::Rejoined { conv: CONV, epoch: 5 },
        message(21, 21, carol, false, text("after all that")),
        message(22, 1, bob, false, text("a replay of the first message")),
        message(
            23,
            23,
            bob,
            false,
            Content::Text(content::Text { body: "@me look".into(), mentions: vec![ME, ME, carol] }),
        ),
        message(24, 24, carol, false, Content::Forward(content::Forward { body: "passed on".into() })),
        message(25, 25, carol, false, preview(id(23), "https://forged.test")),
        message(26, 26, bob, false, preview(id(23), "https://x.test/a")),
        message(27, 27, bob, false, preview(id(21), "https://not-his.test")),
        message(28, 28, bob, false, preview(id(12), "https://deleted.test")),
        message(29, 29, bob, false, preview(id(1), "javascript:alert(1)")),
        message(
            30,
            30,
            bob,
            false,
            Content::Payment(content::Payment {
                transfer: "ab".repeat(16),
                to: ME,
                amount: "12.34".into(),
                currency: "USD".into(),
                note: "for lunch".into(),
            }),
        ),
        message(
            31,
            31,
            carol,
            false,
            Content::RedEnvelope(content::RedEnvelope {
                id: "cd".repeat(16),
                total: "10.00".into(),
                currency: "USD".into(),
                shares: 5,
                note: "cheers".into(),
            }),
        ),
    ];
    let mut timeline = Timeline::new(CONV);
    for event in &events {
        timeline.apply(event, NOW_MS);
        let seq = match event {
            Event::Message { seq, .. } | Event::Undecryptable { seq, .. } => *seq,
            _ => 0,
        };
        record(store, seq, Some(event));
    }
    let history = store.history(CONV, 1_000).expect("history");
    assert_eq!(history.len(), timeline.entries.len(), "entries: {history:#?}");
    for (stored, expected) in history.iter().zip(&timeline.entries) {
        assert_eq!(stored, expected);
    }
    assert!(store.history(ConvId(8), 10).expect("history").is_empty(), "history is per conversation");
}

pub fn history_limit_keeps_the_newest<S: ClientStore>(store: &mut S) {
    for n in 1..=5u8 {
        record(store, u64::from(n), Some(&message(u64::from(n), n, UserId(2), false, text(&format!("m{n}")))));
    }
    let bodies: Vec<String> = store.history(CONV, 2).expect("history").into_iter().map(|e| e.body).collect();
    assert_eq!(bodies, vec!["m4".to_owned(), "m5".to_owned()], "the newest, oldest first");
}

/// Starring and "delete for me" change only this device's history, by the timeline's rules.
pub fn local_changes_star_and_hide<S: ClientStore>(store: &mut S) {
    let id = |n: u8| MsgId([n; 16]);
    let other = ConvId(8);
    let mut timelines = [Timeline::new(CONV), Timeline::new(other)];
    let mut both = |store: &mut S, conv: ConvId, change: Changes<'_>| {
        let timeline = timelines.iter_mut().find(|t| t.conv == conv).expect("a timeline");
        if let Some(Record { event: Some(event), .. }) = change.record {
            timeline.apply(event, NOW_MS);
        }
        if let Some((_, effect)) = &change.local {
            timeline.apply_local(effect.clone());
        }
        store.save(change).expect("save");
    };
    for n in 1..=4u8 {
        let conv = if n == 4 { other } else { CONV };
        let mut event = message(u64::from(n), n, UserId(2), false, text(&format!("m{n}")));
        if let Event::Message { conv: event_conv, .. } = &mut event {
            *event_conv = conv;
        }
        both(
            store,
            conv,
            Changes { record: Some(Record { conv, seq: u64::from(n), event: Some(&event) }), ..Changes::default() },
        );
    }
    let local = |conv: ConvId, effect: Effect| Changes { local: Some((conv, effect)), ..Changes::default() };
    both(store, CONV, local(CONV, Effect::Star { to: id(2), starred: true }));
    both(store, other, local(other, Effect::Star { to: id(4), starred: true }));
    both(store, CONV, local(CONV, Effect::Star { to: id(1), starred: true }));
    both(store, CONV, local(CONV, Effect::Star { to: id(1), starred: false }));
    both(store, CONV, local(CONV, Effect::Hide { to: id(3) }));
    both(store, CONV, local(CONV, Effect::Star { to: id(9), starred: true }));
    both(store, CONV, local(CONV, Effect::Hide { to: id(9) }));
    for timeline in &timelines {
        assert_eq!(store.history(timeline.conv, 100).expect("history"), timeline.entries, "conv {:?}", timeline.conv);
    }
    let starred: Vec<(ConvId, MsgId)> =
        store.starred().expect("starred").into_iter().map(|(conv, e)| (conv, e.msg_id)).collect();
    assert_eq!(starred, vec![(CONV, id(2)), (other, id(4))], "oldest first, across chats");
}

fn preview(to: MsgId, url: &str) -> Content {
    Content::LinkPreview(content::LinkPreview {
        to,
        url: url.into(),
        title: "Title".into(),
        description: "About it".into(),
    })
}

fn message(seq: u64, id: u8, user: UserId, own: bool, content: Content) -> Event {
    Event::Message {
        conv: CONV,
        seq,
        msg_id: MsgId([id; 16]),
        sender: DeviceIdentity { user, device: DeviceId(user.0 * 10) },
        sent_at_ms: if own && seq == 0 { 0 } else { NOW_MS - 60_000 + seq },
        content,
        own,
    }
}

fn text(body: &str) -> Content {
    Content::Text(content::Text { body: body.into(), mentions: Vec::new() })
}

fn reaction(to: MsgId, emoji: &str, remove: bool) -> Content {
    Content::Reaction(content::Reaction { to, emoji: emoji.into(), remove })
}

fn receipt(kind: ReceiptKind, messages: Vec<MsgId>) -> Content {
    Content::Receipt(content::Receipt { kind, messages })
}
