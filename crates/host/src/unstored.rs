//! The records of calls that ran while the audit store could not take them, kept until it
//! can (see `audit.rs`).

use std::collections::VecDeque;

use warden_audit::{Event, Record};

/// Records of calls that ran, kept while they cannot be stored. Past this, the oldest are
/// dropped and counted (only the calls in flight when the store fails end here: the gate
/// refuses every later one).
pub(crate) const MAX_UNSTORED: usize = 10_000;

/// The records kept while the store fails, and how many were dropped past [`MAX_UNSTORED`].
#[derive(Default)]
pub(crate) struct Unstored {
    records: VecDeque<Record>,
    dropped: u64,
}

impl Unstored {
    pub(crate) fn keep(&mut self, records: Vec<Record>) {
        for r in records {
            if self.records.len() >= MAX_UNSTORED {
                self.records.pop_front();
                self.dropped += 1;
            }
            self.records.push_back(r);
        }
    }

    /// The marker saying what the kept records are, or `None` if none are kept.
    pub(crate) fn marker(&self) -> Option<Record> {
        if self.records.is_empty() && self.dropped == 0 {
            return None;
        }
        let mut message = format!(
            "{} records of calls that ran while the audit log could not be written, stored late \
             (a record already stored before the failure may appear twice)",
            self.records.len()
        );
        if self.dropped > 0 {
            message.push_str(&format!(
                "; {} more were dropped (over {MAX_UNSTORED} kept)",
                self.dropped
            ));
        }
        Some(Record::new(Event::Recovery, String::new()).with_message(message))
    }

    /// The oldest kept record, taken out to be stored; `None` once all are (which also
    /// forgets the count of dropped ones: the marker said it).
    pub(crate) fn next(&mut self) -> Option<Record> {
        let next = self.records.pop_front();
        if next.is_none() {
            self.dropped = 0;
        }
        next
    }

    /// A record [`Unstored::next`] gave that could not be stored: first again.
    pub(crate) fn put_back(&mut self, record: Record) {
        self.records.push_front(record);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(i: usize) -> Record {
        Record::new(Event::Call, format!("req-{i}"))
    }

    #[test]
    fn past_the_cap_the_oldest_are_dropped_and_counted() {
        let mut u = Unstored::default();
        assert!(u.marker().is_none());
        u.keep((0..MAX_UNSTORED + 3).map(call).collect());
        let marker = u.marker().unwrap();
        assert_eq!(marker.event(), Event::Recovery);
        let m = marker.message().unwrap();
        assert!(m.starts_with(&format!("{MAX_UNSTORED} records")), "{m}");
        assert!(m.contains("; 3 more were dropped"), "{m}");
        let first = u.next().unwrap();
        assert_eq!(first.request_id(), "req-3");
        u.put_back(first);
        let mut n = 0;
        while u.next().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_UNSTORED);
        assert!(u.is_empty() && u.marker().is_none());
    }
}
