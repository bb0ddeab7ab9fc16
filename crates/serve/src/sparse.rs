//! Log lines said at most once a second per place. A broken seat or bucket refuses every
//! request of a tenant, and a line each (2,918 from one runner in 5 s: outside attack, session
//! 41) floods the operator's log with one fact; the line says how many were not written.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) struct Sparse {
    /// When the next line may be written, in milliseconds since the first look.
    next: AtomicU64,
    skipped: AtomicU64,
}

impl Sparse {
    pub(crate) const fn new() -> Sparse {
        Sparse {
            next: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether to write the line now (with how many were not written since the last one),
    /// or `None` (counted).
    pub(crate) fn now(&self) -> Option<u64> {
        let t = millis();
        let next = self.next.load(Ordering::Relaxed);
        if t >= next
            && self
                .next
                .compare_exchange(next, t + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_line_a_second_says_how_many_were_not_written() {
        let s = Sparse::new();
        assert_eq!(s.now(), Some(0));
        let written = (0..1000).filter(|_| s.now().is_some()).count();
        assert_eq!(written, 0);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.now(), Some(1000));
    }
}
