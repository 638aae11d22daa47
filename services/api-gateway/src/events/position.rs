//! Where one stream is: the highest event id it has written, which a
//! catch-up from PostgreSQL continues after, and the ids it wrote recently,
//! so an export reached both live and by a replay is written once.

use std::collections::{HashSet, VecDeque};

use crate::events::event_id::EventId;

/// Recently written ids remembered per stream. Duplicates only arise
/// between a replay and the live events around it (seconds apart), so a
/// short memory is enough and a long-lived stream stays small.
const REMEMBERED: usize = 1024;

#[derive(Debug, Clone)]
pub struct Position {
    cursor: EventId,
    recent: VecDeque<EventId>,
    written: HashSet<EventId>,
}

impl Position {
    /// A stream that has seen everything up to and including `cursor`.
    pub fn after(cursor: EventId) -> Self {
        Self {
            cursor,
            recent: VecDeque::new(),
            written: HashSet::new(),
        }
    }

    /// The highest id written (or the starting point): catch-ups read what
    /// finished after it.
    pub fn cursor(&self) -> EventId {
        self.cursor
    }

    /// Whether a live event should be written: `false` when this stream
    /// wrote `id` already. Records it and moves the cursor forward.
    pub fn admit(&mut self, id: EventId) -> bool {
        if !self.written.insert(id) {
            return false;
        }
        self.recent.push_back(id);
        if self.recent.len() > REMEMBERED
            && let Some(forgotten) = self.recent.pop_front()
        {
            self.written.remove(&forgotten);
        }
        self.cursor = self.cursor.max(id);
        true
    }

    /// Whether a replayed row should be written: only rows after `from`
    /// (the cursor the replay started at) that were not written live.
    pub fn admit_replayed(&mut self, from: EventId, id: EventId) -> bool {
        id > from && self.admit(id)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn id(micros: i64) -> EventId {
        EventId {
            finished_at_micros: micros,
            export_id: Uuid::from_u128(micros as u128),
        }
    }

    #[test]
    fn an_event_is_admitted_once() {
        let mut position = Position::after(id(0));
        assert!(position.admit(id(5)));
        assert!(!position.admit(id(5)));
        assert!(!position.admit_replayed(id(0), id(5)));
    }

    #[test]
    fn the_cursor_only_moves_forward() {
        let mut position = Position::after(id(10));
        assert!(position.admit(id(20)));
        // Finished earlier but arrived later (another instance's relay was
        // slower): still written, the cursor stays.
        assert!(position.admit(id(15)));
        assert_eq!(position.cursor(), id(20));
    }

    #[test]
    fn a_replay_skips_what_the_client_already_has() {
        let mut position = Position::after(id(10));
        assert!(!position.admit_replayed(id(10), id(10)));
        assert!(!position.admit_replayed(id(10), id(9)));
        assert!(position.admit_replayed(id(10), id(11)));
        assert_eq!(position.cursor(), id(11));
    }

    #[test]
    fn memory_is_bounded() {
        let mut position = Position::after(id(0));
        for micros in 1..=(REMEMBERED as i64 + 10) {
            assert!(position.admit(id(micros)));
        }
        assert_eq!(position.written.len(), REMEMBERED);
        assert_eq!(position.recent.len(), REMEMBERED);
    }
}
