use anytime_client::content::{Content, Text, Timer};
use anytime_client::e2ee::DeviceIdentity;
use anytime_client::{store_conformance, Event, OutboxEntry};

use super::*;

fn fresh_in(dir: &Path) -> SqliteClientStore {
    let mut store = SqliteClientStore::open(dir).expect("open");
    store.set_clock(|| store_conformance::NOW_MS);
    store
}

#[test]
fn passes_the_client_store_conformance_cases() {
    let dirs = std::cell::RefCell::new(Vec::new());
    store_conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fresh_in(dir.path());
        dirs.borrow_mut().push(dir);
        store
    });
}

fn text(seq: u64, id: u8, body: &str) -> Event {
    Event::Message {
        conv: ConvId(7),
        seq,
        msg_id: MsgId([id; 16]),
        sender: DeviceIdentity { user: UserId(2), device: DeviceId(20) },
        sent_at_ms: 1_000,
        content: Content::Text(Text { body: body.into(), mentions: Vec::new() }),
        own: false,
    }
}

fn record(store: &mut SqliteClientStore, event: &Event) {
    let Event::Message { conv, seq, .. } = event else { unreachable!("messages only") };
    let changes = Changes { record: Some(Record { conv: *conv, seq: *seq, event: Some(event) }), ..Changes::default() };
    store.save(changes).expect("save");
}

#[test]
fn history_outbox_and_progress_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = fresh_in(dir.path());
        record(&mut store, &text(3, 1, "kept"));
        let content = Content::Text(Text { body: "queued".into(), mentions: Vec::new() });
        let entry = OutboxEntry { conv: ConvId(7), msg_id: MsgId([2; 16]), ciphertext: b"c", content: &content };
        store.save(Changes { outbox_add: Some(entry), ..Changes::default() }).unwrap();
        store.set("token", b"secret").unwrap();
    }
    let store = fresh_in(dir.path());
    assert_eq!(store.last_seq(ConvId(7)).unwrap(), 3);
    assert_eq!(store.history(ConvId(7), 10).unwrap()[0].body, "kept");
    assert_eq!(store.outbox().unwrap().len(), 1);
    assert_eq!(store.get_text("token").unwrap().as_deref(), Some("secret"));
    assert_eq!(store.search("kept").unwrap(), vec![(MsgId([1; 16]), "kept".to_owned())]);
}

#[test]
fn disappearing_messages_are_gone_once_their_timer_ran_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteClientStore::open(dir.path()).unwrap();
    store.set_clock(|| 1_000);
    let timer = Event::Message {
        conv: ConvId(7),
        seq: 1,
        msg_id: MsgId([1; 16]),
        sender: DeviceIdentity { user: UserId(2), device: DeviceId(20) },
        sent_at_ms: 1_000,
        content: Content::Timer(Timer { seconds: 60 }),
        own: false,
    };
    record(&mut store, &timer);
    record(&mut store, &text(2, 2, "soon gone"));
    assert_eq!(store.search("soon").unwrap().len(), 1);
    store.set_clock(|| 1_000 + 60_000);
    let left: Vec<EntryKind> = store.history(ConvId(7), 10).unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(left, vec![EntryKind::Timer], "the message expired, the timer notice stays");
    assert!(store.search("soon").unwrap().is_empty(), "and it is no longer searchable");
}

#[test]
fn a_profile_from_the_first_release_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Version 0: no outbox content; a deleted message still had a reaction, a read receipt
        // had no delivered one, and timer notices were searchable.
        let db = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        db.execute_batch(migrate::BASE).unwrap();
        db.execute_batch(
            "INSERT INTO outbox (conv, msg_id, ciphertext) VALUES (7, x'00000000000000000000000000000001', x'01');
             INSERT INTO messages VALUES (x'02020202020202020202020202020202', 7, 1, 2, 20, 1000, 'text', '', NULL, 0, 1, 0, NULL, 1);
             INSERT INTO reactions VALUES (x'02020202020202020202020202020202', 3, 'x');
             INSERT INTO messages VALUES (x'03030303030303030303030303030303', 7, 2, 2, 20, 1000, 'text', 'hi', NULL, 0, 0, 0, NULL, 2);
             INSERT INTO receipts VALUES (x'03030303030303030303030303030303', 3, 'read');
             INSERT INTO messages VALUES (x'04040404040404040404040404040404', 7, 3, 2, 20, 1000, 'timer', 'disappearing messages: 60 s', NULL, 0, 0, 0, NULL, 3);
             INSERT INTO search VALUES ('disappearing messages: 60 s', '04040404040404040404040404040404');",
        )
        .unwrap();
    }
    let store = fresh_in(dir.path());
    let version: i64 = store.db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, migrate::MIGRATIONS.len() as i64);
    assert_eq!(store.outbox().unwrap()[0].content, None, "the old entry has no content");
    let history = store.history(ConvId(7), 10).unwrap();
    assert!(history[0].reactions.is_empty());
    assert_eq!((history[1].read_by.clone(), history[1].delivered_to.clone()), (vec![UserId(3)], vec![UserId(3)]));
    assert!(store.search("disappearing").unwrap().is_empty());
    drop(store);
    assert_eq!(fresh_in(dir.path()).outbox().unwrap().len(), 1, "opening again applies nothing twice");
}

#[test]
fn a_profile_from_a_newer_release_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = SqliteClientStore::open(dir.path()).err().expect("refused");
    assert!(matches!(error, ProfileError::TooNew { found: 99, .. }), "{error}");
    assert!(error.to_string().contains("update anytime"), "{error}");
    let db = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 99);
}

#[test]
fn history_pages_back_from_any_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = fresh_in(dir.path());
    for n in 1..=5u8 {
        record(&mut store, &text(u64::from(n), n, &format!("m{n}")));
    }
    let bodies = |page: Option<Vec<Entry>>| -> Vec<String> { page.unwrap().into_iter().map(|e| e.body).collect() };
    assert_eq!(bodies(store.history_page(ConvId(7), None, 2).unwrap()), ["m4", "m5"]);
    assert_eq!(bodies(store.history_page(ConvId(7), Some(MsgId([4; 16])), 2).unwrap()), ["m2", "m3"]);
    assert_eq!(bodies(store.history_page(ConvId(7), Some(MsgId([2; 16])), 2).unwrap()), ["m1"]);
    assert!(store.history_page(ConvId(7), Some(MsgId([9; 16])), 2).unwrap().is_none(), "not in this chat");
    assert!(store.history_page(ConvId(8), Some(MsgId([4; 16])), 2).unwrap().is_none(), "another chat's message");
    assert_eq!(store.entry(ConvId(7), MsgId([3; 16])).unwrap().map(|e| e.body), Some("m3".to_owned()));
    assert!(store.entry(ConvId(8), MsgId([3; 16])).unwrap().is_none(), "one message, in its own chat only");
}
