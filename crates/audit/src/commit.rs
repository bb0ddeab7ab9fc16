//! The group commit behind [`crate::AuditLog::append`]: one writer thread per open log.
//!
//! A caller queues its record with a one-shot reply channel and waits. The writer sleeps until
//! the queue is not empty, takes the head file's exclusive lock (waiting for other processes),
//! then takes every record queued by then (those that arrived while it waited for the lock
//! too) and appends them in one round ([`Files::append_round`]): one head read and MAC check,
//! one `write` of all the lines, one head rewrite. It unlocks, syncs the log and the head once,
//! and only then answers each caller with its own seq and hash or its own error. Records that
//! arrive during a round wait for the next one, so the more callers overlap, the more records
//! share a sync.
//!
//! Failures stay with the callers they concern: a record that cannot be encoded fails alone; a
//! head that cannot be read or checked, a failed write (rolled back) or a failed sync fails
//! every record of that round; after a failed sync or rollback the writer is broken and fails
//! every later record with [`AuditError::Broken`]. Should the thread end for any other reason,
//! the replies it holds are dropped and their callers (and all later ones) get
//! [`AuditError::Broken`]: nobody waits forever.

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use crate::error::AuditError;
use crate::head::Head;
use crate::record::Record;
use crate::round::{Appended, Files, MAX_ROUND_RECORDS, Round, io_err};

/// The writer of one open log: its files, its queue, and what the thread shares with callers.
pub(crate) struct Writer {
    files: Files,
    /// The unkeyed head adopted at open (a key created just now), until it is rewritten.
    adopted: Option<(u64, String)>,
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a record was queued, or the log is being dropped.
    wake: Condvar,
    /// Rounds that synced the files.
    rounds: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Set when the log is dropped (the thread ends once the queue is empty) or the thread
    /// ended: no more records are accepted.
    closed: bool,
}

/// One queued record and where its answer goes.
struct Job {
    record: Record,
    reply: ReplyTo,
}

/// A caller blocked on a channel, or a task awaiting a future (which never holds an executor
/// thread while the round syncs).
enum ReplyTo {
    Wait(SyncSender<Reply>),
    Notify(futures_channel::oneshot::Sender<Reply>),
}

impl ReplyTo {
    fn send(self, reply: Reply) {
        // A caller that stopped waiting has nothing left to be told.
        match self {
            ReplyTo::Wait(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Notify(tx) => {
                let _ = tx.send(reply);
            }
        }
    }
}

/// The answer to one append: the record back (for its `tracing` event) and where it was
/// stored, or why not.
pub(crate) struct Reply {
    pub(crate) record: Record,
    pub(crate) result: Result<Appended, AuditError>,
}

impl Writer {
    /// Starts the writer thread of a log whose files have been checked.
    pub(crate) fn start(
        files: Files,
        adopted: Option<(u64, String)>,
    ) -> Result<(Arc<Writer>, JoinHandle<()>), AuditError> {
        let dir = files.dir.clone();
        let writer = Arc::new(Writer {
            files,
            adopted,
            queue: Mutex::default(),
            wake: Condvar::new(),
            rounds: AtomicU64::new(0),
        });
        let thread = thread::Builder::new()
            .name("warden-audit-writer".to_owned())
            .spawn({
                let writer = Arc::clone(&writer);
                move || writer.run()
            })
            .map_err(io_err("starting the writer thread of", &dir))?;
        Ok((writer, thread))
    }

    pub(crate) fn files(&self) -> &Files {
        &self.files
    }

    pub(crate) fn sync_rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Queues `record` and waits until the round that took it has synced (or failed).
    pub(crate) fn submit(&self, record: Record) -> Result<Reply, AuditError> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let mut queue = self.queue();
            if queue.closed {
                return Err(AuditError::Broken);
            }
            queue.jobs.push(Job {
                record,
                reply: ReplyTo::Wait(reply),
            });
        }
        self.wake.notify_one();
        // A dropped reply means the writer thread ended without answering.
        answer.recv().map_err(|_| AuditError::Broken)
    }

    /// Queues `records` together (in order, so they commit in one round unless it is full)
    /// and returns their answers, to be awaited: the caller's thread is not held.
    pub(crate) fn submit_all(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<futures_channel::oneshot::Receiver<Reply>>, AuditError> {
        let mut answers = Vec::with_capacity(records.len());
        {
            let mut queue = self.queue();
            if queue.closed {
                return Err(AuditError::Broken);
            }
            for record in records {
                let (reply, answer) = futures_channel::oneshot::channel();
                queue.jobs.push(Job {
                    record,
                    reply: ReplyTo::Notify(reply),
                });
                answers.push(answer);
            }
        }
        self.wake.notify_one();
        Ok(answers)
    }

    /// Accepts no more records; the thread ends once it has committed the queued ones.
    pub(crate) fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }

    /// The queue holds plain data, consistent between any two statements: a panic elsewhere
    /// while it was locked leaves nothing half done, so a poisoned lock is used as is.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue().jobs.len()
    }

    /// The writer thread.
    fn run(&self) {
        let _closed = CloseOnExit(self);
        let mut broken = false;
        while self.wait_for_work() {
            self.round(&mut broken);
        }
    }

    /// Sleeps until a record is queued; false once the log is closed and nothing is queued.
    fn wait_for_work(&self) -> bool {
        let mut queue = self.queue();
        while queue.jobs.is_empty() && !queue.closed {
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !queue.jobs.is_empty()
    }

    /// Takes up to [`MAX_ROUND_RECORDS`] queued records, oldest first.
    fn take(&self) -> Vec<Job> {
        let mut queue = self.queue();
        if queue.jobs.len() <= MAX_ROUND_RECORDS {
            mem::take(&mut queue.jobs)
        } else {
            queue.jobs.drain(..MAX_ROUND_RECORDS).collect()
        }
    }

    /// One round: lock, append every queued record, unlock, sync, answer.
    fn round(&self, broken: &mut bool) {
        if *broken {
            let jobs = self.take();
            let results = jobs.iter().map(|_| Err(AuditError::Broken)).collect();
            return answer(jobs, results);
        }
        let lock = match self.files.lock() {
            Ok(lock) => lock,
            Err(e) => {
                let jobs = self.take();
                let results = jobs.iter().map(|_| Err(e.duplicate())).collect();
                return answer(jobs, results);
            }
        };
        // After the lock: what was queued while another process held it joins this round.
        let mut jobs = self.take();
        let adopted = |head: &Head| {
            head.mac.is_none()
                && self
                    .adopted
                    .as_ref()
                    .is_some_and(|(seq, hash)| *seq == head.seq && *hash == head.hash)
        };
        let Round { mut results, dirty } =
            self.files
                .append_round(jobs.iter().map(|j| &j.record), adopted, broken);
        drop(lock);
        // Records over the round's byte cap go back to the front of the queue.
        let rest = jobs.split_off(results.len().min(jobs.len()));
        if !rest.is_empty() {
            self.queue().jobs.splice(0..0, rest);
        }
        if dirty {
            self.rounds.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.files.sync() {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // written since the last good sync can be trusted to be there.
                *broken = true;
                for result in &mut results {
                    if result.is_ok() {
                        *result = Err(e.duplicate());
                    }
                }
            }
        }
        tracing::trace!(
            target: "warden::audit",
            records = results.len(),
            synced = dirty,
            "audit round committed"
        );
        answer(jobs, results);
    }
}

/// Sends each job its result (`jobs` and `results` in the same order). A caller that stopped
/// waiting has nothing left to be told.
fn answer(jobs: Vec<Job>, results: Vec<Result<Appended, AuditError>>) {
    let mut results = results.into_iter();
    for job in jobs {
        let result = results.next().unwrap_or(Err(AuditError::Broken));
        job.reply.send(Reply {
            record: job.record,
            result,
        });
    }
}

/// Closes the queue when the writer thread ends, however it ends, and drops what is still
/// queued: their callers get [`AuditError::Broken`] instead of waiting forever.
struct CloseOnExit<'a>(&'a Writer);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let jobs = {
            let mut queue = self.0.queue();
            queue.closed = true;
            mem::take(&mut queue.jobs)
        };
        drop(jobs);
    }
}
