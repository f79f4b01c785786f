//! What of a long history is in memory. The browser keeps each chat's newest chunks (see
//! `stored::first_chunk_at_open`) and loads older ones when the user scrolls back, opens a search
//! hit or the starred list. An event can still touch an older message (a late reaction, edit,
//! delete or receipt): its effect is applied to what is loaded and kept *pending* for the rest,
//! stored in the history's head, and applied when that chunk is loaded. New messages are always
//! appended, so they are never pending.
//!
//! Pure functions (no browser): tested natively.

use anytime_client::timeline::{Effect, Entry, Timeline};
use anytime_proto::MsgId;

use crate::stored::{Summary, CHUNK_ENTRIES};

/// Effects kept pending per history at most; past it the history is loaded whole (which
/// applies them, or drops those whose message does not exist anywhere).
pub const PENDING_EFFECTS_MAX: usize = 512;

/// One history's window: its entries from chunk `base` on are the in-memory timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub base: u32,
    pub summary: Summary,
    pub pending: Vec<Effect>,
}

impl Window {
    /// Absolute index (in the whole history) of the in-memory entry `index`.
    pub fn absolute(&self, index: usize) -> usize {
        self.base as usize * CHUNK_ENTRIES + index
    }

    pub fn whole(&self) -> bool {
        self.base == 0
    }
}

/// The messages an effect changes (none for a new entry or a timer: those append).
pub fn targets(effect: &Effect) -> Vec<MsgId> {
    match effect {
        Effect::Insert(entry) => vec![entry.msg_id],
        Effect::SetTimer { notice, .. } => vec![notice.msg_id],
        Effect::React { to, .. }
        | Effect::Edit { to, .. }
        | Effect::Delete { to, .. }
        | Effect::Preview { to, .. }
        | Effect::Star { to, .. }
        | Effect::Hide { to } => vec![*to],
        Effect::Receipt { messages, .. } => messages.clone(),
    }
}

/// Splits `effect` into the part for what is loaded (`found`) and the part to keep pending.
/// New entries and timers are always for now. A receipt applies to the loaded messages it
/// names now (and resets the unread count now, if it says so) and to the others later.
pub fn split(effect: Effect, found: impl Fn(MsgId) -> bool) -> (Option<Effect>, Option<Effect>) {
    match effect {
        Effect::Insert(_) | Effect::SetTimer { .. } => (Some(effect), None),
        Effect::Receipt { user, kind, messages, own } => {
            let (now, later): (Vec<MsgId>, Vec<MsgId>) = messages.into_iter().partition(|m| found(*m));
            let later = (!later.is_empty()).then_some(Effect::Receipt { user, kind, messages: later, own: false });
            (Some(Effect::Receipt { user, kind, messages: now, own }), later)
        }
        other => {
            if targets(&other).into_iter().all(found) {
                (Some(other), None)
            } else {
                (None, Some(other))
            }
        }
    }
}

/// What loading older entries did: the effects that were applied to them (so the search index
/// can follow) and whether any entry changed.
pub struct Prepended {
    pub applied: Vec<Effect>,
}

/// Puts `older` (whole chunks just before `window.base`, oldest first) in front of `timeline`,
/// after applying the pending effects that concern them; `chunks` is how many chunks `older` is.
pub fn prepend(timeline: &mut Timeline, window: &mut Window, older: Vec<Entry>, chunks: u32) -> Prepended {
    let mut part = Timeline { conv: timeline.conv, entries: older, ..Timeline::default() };
    let mut applied = Vec::new();
    let mut still = Vec::new();
    for effect in std::mem::take(&mut window.pending) {
        let (now, later) = split(effect, |id| part.find(id).is_some());
        if let Some(now) = now {
            if !is_empty_receipt(&now) {
                part.apply_local(now.clone());
                applied.push(now);
            }
        }
        still.extend(later);
    }
    window.base -= chunks;
    // With the whole history in memory, what is still pending names messages that are nowhere.
    window.pending = if window.base == 0 { Vec::new() } else { still };
    for entry in &part.entries {
        window.summary.note(entry);
    }
    part.entries.append(&mut timeline.entries);
    timeline.entries = part.entries;
    Prepended { applied }
}

fn is_empty_receipt(effect: &Effect) -> bool {
    matches!(effect, Effect::Receipt { messages, own: false, .. } if messages.is_empty())
}

/// The first chunk of the in-memory `timeline` (from `base`) holding a disappearing message.
pub fn expiring_chunk(timeline: &Timeline, base: u32) -> Option<u32> {
    let index = timeline.entries.iter().position(|e| e.expires_at_ms.is_some())?;
    Some(base + (index / CHUNK_ENTRIES) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anytime_client::content::ReceiptKind;
    use anytime_proto::{ConvId, DeviceId, UserId};

    fn id(n: u32) -> MsgId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        MsgId(id)
    }

    fn entry(n: u32) -> Entry {
        Entry::plain(id(n), u64::from(n) + 1, UserId(2), DeviceId(20), 1_000 + u64::from(n), format!("m{n}"))
    }

    /// A history of `n` entries, all in memory, and the same with only its last chunk loaded.
    fn histories(n: u32) -> (Timeline, Timeline, Window, Vec<Entry>) {
        let conv = ConvId(3);
        let whole = Timeline { conv, entries: (0..n).map(entry).collect(), ..Timeline::default() };
        let cut = (n as usize / CHUNK_ENTRIES) * CHUNK_ENTRIES;
        let tail = Timeline { conv, entries: whole.entries[cut..].to_vec(), ..Timeline::default() };
        let window = Window { base: (cut / CHUNK_ENTRIES) as u32, ..Window::default() };
        (whole.clone(), tail, window, whole.entries[..cut].to_vec())
    }

    /// Applies `effect` as the store does: now to what is loaded, later to the rest.
    fn apply(timeline: &mut Timeline, window: &mut Window, effect: Effect) {
        let (now, later) = split(effect, |m| timeline.find(m).is_some());
        if let Some(now) = now {
            timeline.apply_local(now);
        }
        window.pending.extend(later);
    }

    #[test]
    fn effects_on_unloaded_entries_wait_and_apply_when_their_chunk_is_loaded() {
        let (mut whole, mut tail, mut window, older) = histories(2 * CHUNK_ENTRIES as u32 + 10);
        let author = UserId(2);
        let effects = vec![
            Effect::Edit { to: id(3), author, body: "edited".into() },
            Effect::Delete { to: id(4), author },
            Effect::Delete { to: id(5), author: UserId(9) },
            Effect::React { to: id(6), user: UserId(1), emoji: "👍".into(), remove: false },
            Effect::Receipt { user: UserId(1), kind: ReceiptKind::Read, messages: vec![id(7), id(515)], own: false },
            Effect::Star { to: id(516), starred: true },
            Effect::Edit { to: id(999_999), author, body: "nowhere".into() },
        ];
        for effect in effects {
            whole.apply_local(effect.clone());
            apply(&mut tail, &mut window, effect);
        }
        assert_eq!(tail.find(id(515)).map(|e| e.read_by.clone()), Some(vec![UserId(1)]), "loaded part applied now");
        assert_eq!(
            window.pending.len(),
            6,
            "edit, two deletes, reaction, the receipt's unloaded half, the unknown edit"
        );
        let chunks = (older.len() / CHUNK_ENTRIES) as u32;
        let done = prepend(&mut tail, &mut window, older, chunks);
        assert_eq!(tail, whole, "the same history as if it had all been in memory");
        assert_eq!(window.base, 0);
        assert_eq!(done.applied.len(), 5);
        assert!(window.pending.is_empty(), "the edit of a message that is nowhere is dropped once all is loaded");
    }

    #[test]
    fn a_receipt_from_my_other_device_resets_unread_now_not_when_old_chunks_load() {
        let (_, mut tail, mut window, older) = histories(CHUNK_ENTRIES as u32 + 2);
        tail.unread = 2;
        let receipt = Effect::Receipt { user: UserId(1), kind: ReceiptKind::Read, messages: vec![id(0)], own: true };
        apply(&mut tail, &mut window, receipt);
        assert_eq!(tail.unread, 0);
        tail.unread = 1;
        prepend(&mut tail, &mut window, older, 1);
        assert_eq!(tail.unread, 1, "the pending half does not reset it again");
        assert_eq!(tail.entries[0].read_by, vec![UserId(1)]);
    }

    #[test]
    fn the_summary_and_expiring_chunk_follow_what_is_loaded() {
        let (_, mut tail, mut window, mut older) = histories(CHUNK_ENTRIES as u32 + 1);
        older[10].starred = true;
        older[11].expires_at_ms = Some(5);
        prepend(&mut tail, &mut window, older, 1);
        assert!(window.summary.starred.contains(&id(10)));
        assert!(window.summary.writers.contains(&UserId(2)));
        assert_eq!(expiring_chunk(&tail, window.base), Some(0));
        assert_eq!(window.absolute(3), 3);
    }
}
