//! A line on a terminal for work that takes more than a moment (verifying and compiling a big
//! component takes 10-30 s): nothing for the first second, then the label and the seconds so
//! far, rewritten in place, and how long it took at the end. Nothing at all when stderr is not
//! a terminal: pipes and logs stay as they were.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long work may take before the line appears.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// How often the line is rewritten.
const EVERY: Duration = Duration::from_millis(500);

pub struct Ticker {
    /// Set when the work is done; the thread wakes on the condvar.
    done: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking for `label` (shown as "LABEL ... 3 s").
    pub fn start(label: String) -> Ticker {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || tick(&label, &done))
        });
        Ticker { done, thread }
    }
}

fn tick(label: &str, done: &(Mutex<bool>, Condvar)) {
    let start = Instant::now();
    let (lock, cvar) = done;
    let mut finished = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut shown = false;
    let mut wait = QUIET_FOR;
    loop {
        let (g, _) = cvar
            .wait_timeout_while(finished, wait, |f| !*f)
            .unwrap_or_else(PoisonError::into_inner);
        finished = g;
        let secs = start.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if *finished {
            if shown {
                let _ = writeln!(err, "\r{label}: {secs:.1} s    ");
            }
            return;
        }
        let _ = write!(err, "\r{label} ... {secs:.0} s ");
        let _ = err.flush();
        shown = true;
        wait = EVERY;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
