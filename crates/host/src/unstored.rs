//! The records of calls that ran, changes made and requests and changes refused while the
//! audit store could not take them, kept until it can (see `audit.rs`).

use std::collections::VecDeque;

use warden_audit::{Event, Record};

/// Records kept while they cannot be stored, and their bytes (as JSON). Past either, the
/// oldest are dropped and counted (only the calls in flight when the store fails end here: the
/// gate refuses every later one; refusals are one record per kind and window, see
/// `refusals.rs`).
pub(crate) const MAX_UNSTORED: usize = 10_000;
pub(crate) const MAX_UNSTORED_BYTES: usize = 16 << 20;

/// The records kept while the store fails (with their sizes), and how many were dropped past
/// [`MAX_UNSTORED`] or [`MAX_UNSTORED_BYTES`].
#[derive(Default)]
pub(crate) struct Unstored {
    records: VecDeque<(Record, usize)>,
    bytes: usize,
    dropped: u64,
    /// The marker of the records kept now is stored: storing them again after a failure half
    /// way needs no second one (unless more were kept since).
    marked: bool,
}

impl Unstored {
    pub(crate) fn keep(&mut self, records: Vec<Record>) {
        self.marked = false;
        for r in records {
            let size = serde_json::to_vec(&r).map_or(0, |v| v.len());
            self.records.push_back((r, size));
            self.bytes += size;
            while self.records.len() > MAX_UNSTORED || self.bytes > MAX_UNSTORED_BYTES {
                let Some((_, size)) = self.records.pop_front() else {
                    break;
                };
                self.bytes -= size;
                self.dropped += 1;
            }
        }
    }

    /// Whether records are kept (or were dropped, which the marker must say).
    pub(crate) fn pending(&self) -> bool {
        !self.records.is_empty() || self.dropped > 0
    }

    /// The marker saying what the kept records are, or `None` if none are kept or it is
    /// stored already ([`Unstored::marker_stored`]).
    pub(crate) fn marker(&self) -> Option<Record> {
        if !self.pending() || self.marked {
            return None;
        }
        let mut message = format!(
            "{} records (of calls that ran, changes made and requests refused) kept while the \
             audit log could not be written, stored late (a record already stored before the \
             failure may appear twice)",
            self.records.len()
        );
        if self.dropped > 0 {
            message.push_str(&format!(
                "; {} more were dropped (over {MAX_UNSTORED} records or {MAX_UNSTORED_BYTES} \
                 bytes kept)",
                self.dropped
            ));
        }
        Some(Record::new(Event::Recovery, String::new()).with_message(message))
    }

    /// The oldest kept record, taken out to be stored; `None` once all are (which also
    /// forgets the count of dropped ones: the marker said it).
    /// The marker [`Unstored::marker`] gave is stored.
    pub(crate) fn marker_stored(&mut self) {
        self.marked = true;
    }

    pub(crate) fn next(&mut self) -> Option<Record> {
        match self.records.pop_front() {
            Some((r, size)) => {
                self.bytes -= size;
                Some(r)
            }
            None => {
                self.dropped = 0;
                self.marked = false;
                None
            }
        }
    }

    /// A record [`Unstored::next`] gave that could not be stored: first again.
    pub(crate) fn put_back(&mut self, record: Record) {
        let size = serde_json::to_vec(&record).map_or(0, |v| v.len());
        self.bytes += size;
        self.records.push_front((record, size));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Kept and not stored, with those dropped past the bounds: what is lost if the process
    /// ends now.
    pub(crate) fn lost(&self) -> u64 {
        self.records.len() as u64 + self.dropped
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

    #[test]
    fn a_marker_stored_is_not_asked_for_again_until_more_are_kept() {
        let mut u = Unstored::default();
        u.keep(vec![call(1), call(2)]);
        assert!(u.marker().is_some());
        u.marker_stored();
        // The first record is stored, the second is not: tried again, without a marker.
        let first = u.next().unwrap();
        assert_eq!(first.request_id(), "req-1");
        assert!(u.pending() && u.marker().is_none());
        // A call that ran meanwhile: a marker again, for everything kept.
        u.keep(vec![call(3)]);
        let m = u.marker().unwrap();
        assert!(m.message().unwrap().starts_with("2 records"), "{m:?}");
        u.marker_stored();
        while u.next().is_some() {}
        assert!(!u.pending() && u.marker().is_none());
        u.keep(vec![call(4)]);
        assert!(u.marker().is_some());
    }

    #[test]
    fn big_records_are_capped_in_bytes() {
        let mut u = Unstored::default();
        // Each field is cut at 1 KiB: a record of two full ones is over 2 KiB.
        let big = |i: usize| {
            call(i)
                .with_message("x".repeat(4 << 10))
                .with_target("y".repeat(4 << 10))
        };
        u.keep((0..9000).map(big).collect());
        assert!(u.bytes <= MAX_UNSTORED_BYTES, "{}", u.bytes);
        assert!(
            u.dropped > 0 && u.records.len() < 9000,
            "{}",
            u.records.len()
        );
        let m = u.marker().unwrap();
        assert!(m.message().unwrap().contains("more were dropped"), "{m:?}");
        while u.next().is_some() {}
        assert_eq!(u.bytes, 0);
    }
}
