//! The group commit behind [`crate::AuditLog::append`] and [`StoreLog::append`]: one writer
//! thread per open log, driving a [`RoundStore`] (the files of `round.rs`, or another store).
//!
//! A caller queues its record with a one-shot reply channel and waits. The writer sleeps until
//! the queue is not empty, takes exclusive access to the store ([`RoundStore::begin`]: for the
//! files, the head file's lock, waiting for other processes), then takes every record queued
//! by then (those that arrived while it waited for the lock too) and appends them in one round
//! ([`RoundStore::append_round`]; for the files: one head read and MAC check, one `write` of
//! all the lines, one head rewrite, then unlock). It syncs once ([`RoundStore::sync`]), and
//! only then answers each caller with its own seq and hash or its own error. Records that
//! arrive during a round wait for the next one, so the more callers overlap, the more records
//! share a sync.
//!
//! Failures stay with the callers they concern: a record that cannot be encoded fails alone; a
//! head that cannot be read or checked, a failed write (rolled back) or a failed sync fails
//! every record of that round; after a failed sync or rollback the writer is broken and fails
//! every later record with [`AuditError::Broken`]. Should the thread end for any other reason,
//! the replies it holds are dropped and their callers (and all later ones) get
//! [`AuditError::Broken`]: nobody waits forever.

use std::fmt;
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::AuditError;
use crate::record::Record;
use crate::round::{MAX_ROUND_RECORDS, io_err};
use crate::sink::{AuditSink, Pending, emit};
use crate::store::{Appended, Round, RoundStore};

/// The writer of one open log: its queue, and what the thread shares with callers. The store
/// itself belongs to the thread.
pub(crate) struct Writer {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: a record was queued, or the log is being dropped.
    wake: Condvar,
    /// Wakes [`Writer::settle`]: records were answered.
    answered: Condvar,
    /// Rounds that synced the files.
    rounds: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Set when the log is dropped (the thread ends once the queue is empty) or the thread
    /// ended: no more records are accepted.
    closed: bool,
    /// Records queued since the log opened, and of those answered (or dropped unanswered).
    given: u64,
    done: u64,
    /// Of those done, the ones not stored whose callers had stopped waiting: nobody else
    /// knows they are not stored.
    lost: u64,
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
    /// Whether the caller heard it (false: it had stopped waiting).
    fn send(self, reply: Reply) -> bool {
        match self {
            ReplyTo::Wait(tx) => tx.send(reply).is_ok(),
            ReplyTo::Notify(tx) => tx.send(reply).is_ok(),
        }
    }

    /// Whether the caller stopped waiting (a blocked caller never does).
    fn gone(&self) -> bool {
        match self {
            ReplyTo::Wait(_) => false,
            ReplyTo::Notify(tx) => tx.is_canceled(),
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
    /// Starts the writer thread over a store that is ready for rounds (its head checked).
    /// `place` names the store if the thread cannot be started.
    pub(crate) fn start(
        store: Box<dyn RoundStore>,
        place: PathBuf,
    ) -> Result<(Arc<Writer>, JoinHandle<()>), AuditError> {
        let writer = Arc::new(Writer {
            queue: Mutex::default(),
            wake: Condvar::new(),
            answered: Condvar::new(),
            rounds: AtomicU64::new(0),
        });
        let thread = thread::Builder::new()
            .name("warden-audit-writer".to_owned())
            .spawn({
                let writer = Arc::clone(&writer);
                move || writer.run(store)
            })
            .map_err(io_err("starting the writer thread of", &place))?;
        Ok((writer, thread))
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
            queue.given += 1;
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
                queue.given += 1;
                answers.push(answer);
            }
        }
        self.wake.notify_one();
        Ok(answers)
    }

    /// Appends one record, waits until it is durable, and emits its `tracing` event.
    pub(crate) fn append(&self, record: Record) -> Result<Appended, AuditError> {
        let reply = self.submit(record)?;
        let appended = reply.result?;
        emit(&reply.record, Some(appended.seq));
        Ok(appended)
    }

    /// [`AuditSink::append_all`] through this writer: the records are queued now, and the
    /// future resolves once all are answered.
    pub(crate) fn append_all(&self, records: Vec<Record>) -> Pending {
        let answers = self.submit_all(records);
        Pending::new(async move {
            let mut first = Ok(());
            for answer in answers? {
                // A dropped reply means the writer thread ended without answering.
                let reply = answer.await.map_err(|_| AuditError::Broken)?;
                match reply.result {
                    Ok(appended) => emit(&reply.record, Some(appended.seq)),
                    Err(e) => {
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
            }
            first
        })
    }

    /// Waits, at most `within`, until every record queued so far is answered: an error when
    /// some whose callers had gone were not stored, or some are still queued
    /// ([`AuditSink::settle`]).
    pub(crate) fn settle(&self, within: Duration) -> Result<(), AuditError> {
        let until = Instant::now() + within;
        let mut queue = self.queue();
        let given = queue.given;
        while queue.done < given {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .answered
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let waiting = given.saturating_sub(queue.done);
        match (queue.lost, waiting) {
            (0, 0) => Ok(()),
            (lost, waiting) => Err(AuditError::Unstored { lost, waiting }),
        }
    }

    /// Counts `done` records answered, `lost` of them unstored with their callers gone.
    fn answered(&self, done: usize, lost: usize) {
        {
            let mut queue = self.queue();
            queue.done += done as u64;
            queue.lost += lost as u64;
        }
        self.answered.notify_all();
    }

    /// Accepts no more records; the thread ends once it has committed the queued ones.
    pub(crate) fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }

    /// Closes the queue and waits for the thread to commit what is queued and end.
    pub(crate) fn stop(&self, thread: Option<JoinHandle<()>>) {
        self.close();
        if let Some(thread) = thread {
            // A panic there has answered its callers with errors already (their replies were
            // dropped).
            let _ = thread.join();
        }
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
    fn run(&self, mut store: Box<dyn RoundStore>) {
        let _closed = CloseOnExit(self);
        let mut broken = Broken::No;
        while self.wait_for_work() {
            self.round(store.as_mut(), &mut broken);
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
    fn round(&self, store: &mut dyn RoundStore, broken: &mut Broken) {
        // A store broken by a round (a write it could not undo) is asked to recover before
        // each round (outside attack: a log made unwritable for a moment kept every call
        // refused until a restart). Not after a failed sync: the kernel may have dropped the
        // pages while a read still shows them, so nothing read back can be trusted.
        if *broken == Broken::ByRound && store.recover().is_ok() {
            *broken = Broken::No;
        }
        if *broken != Broken::No {
            let jobs = self.take();
            let results = jobs.iter().map(|_| Err(AuditError::Broken)).collect();
            return self.answer(jobs, results);
        }
        if let Err(e) = store.begin() {
            let jobs = self.take();
            let results = jobs.iter().map(|_| Err(e.duplicate())).collect();
            return self.answer(jobs, results);
        }
        // After the lock: what was queued while another process held it joins this round.
        let mut jobs = self.take();
        let batch: Vec<&Record> = jobs.iter().map(|j| &j.record).collect();
        let Round {
            mut results,
            dirty,
            broken: damaged,
        } = store.append_round(&batch);
        drop(batch);
        if damaged {
            *broken = Broken::ByRound;
        }
        // Records over the round's byte cap go back to the front of the queue. A round that
        // answered none is not retried (it would never end): `answer` fails them all.
        if !results.is_empty() {
            let rest = jobs.split_off(results.len().min(jobs.len()));
            if !rest.is_empty() {
                self.queue().jobs.splice(0..0, rest);
            }
        }
        if dirty {
            self.rounds.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = store.sync() {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // written since the last good sync can be trusted to be there.
                *broken = Broken::BySync;
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
        self.answer(jobs, results);
    }

    /// Sends each job its result (`jobs` and `results` in the same order), and counts them
    /// answered. A caller that stopped waiting has nothing left to be told; its record, if not
    /// stored, is counted lost.
    fn answer(&self, jobs: Vec<Job>, results: Vec<Result<Appended, AuditError>>) {
        let (done, mut lost) = (jobs.len(), 0);
        let mut why = None;
        let mut results = results.into_iter();
        for job in jobs {
            let result = results.next().unwrap_or(Err(AuditError::Broken));
            let failed = result.as_ref().err().map(ToString::to_string);
            let heard = job.reply.send(Reply {
                record: job.record,
                result,
            });
            if let (Some(e), false) = (failed, heard) {
                lost += 1;
                why.get_or_insert(e);
            }
        }
        if let Some(error) = why {
            // Nobody else will say so: their calls were dropped while they committed.
            tracing::error!(
                target: "warden::audit",
                records = lost,
                %error,
                "audit records of dropped calls could not be stored: they are lost"
            );
        }
        self.answered(done, lost);
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
        let lost = jobs.iter().filter(|j| j.reply.gone()).count();
        let done = jobs.len();
        drop(jobs);
        self.0.answered(done, lost);
    }
}

/// An audit log over any [`RoundStore`]: the writer thread and group commit of
/// [`crate::AuditLog`], with the rounds stored wherever the store keeps them (a database, or a
/// test's memory). [`crate::AuditLog`] is this over the files of an audit folder.
///
/// [`StoreLog::append`] returns once the store has made the record durable; appends waiting
/// when a round starts share it. Dropping the log stops its writer thread after it has
/// committed what is queued, and drops the store.
pub struct StoreLog {
    writer: Arc<Writer>,
    /// The writer thread; joined on drop.
    thread: Option<JoinHandle<()>>,
    location: String,
}

impl StoreLog {
    /// Starts the writer thread over `store`, which must be ready for rounds (opened, its head
    /// checked or created).
    pub fn new(store: Box<dyn RoundStore>) -> Result<StoreLog, AuditError> {
        let location = store.location();
        let (writer, thread) = Writer::start(store, PathBuf::from(&location))?;
        Ok(StoreLog {
            writer,
            thread: Some(thread),
            location,
        })
    }

    /// Appends one record and returns once it is durable, with where it was stored. Also emits
    /// a `tracing` event (target `warden::audit`, level INFO) with the record's main fields.
    pub fn append(&self, record: Record) -> Result<Appended, AuditError> {
        self.writer.append(record)
    }

    /// How many rounds wrote something (and were synced).
    pub fn sync_rounds(&self) -> u64 {
        self.writer.sync_rounds()
    }

    /// The store's [`RoundStore::location`].
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl fmt::Debug for StoreLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLog")
            .field("location", &self.location)
            .field("sync_rounds", &self.sync_rounds())
            .finish_non_exhaustive()
    }
}

impl Drop for StoreLog {
    fn drop(&mut self) {
        self.writer.stop(self.thread.take());
    }
}

impl AuditSink for StoreLog {
    fn append(&self, record: Record) -> Result<(), AuditError> {
        StoreLog::append(self, record).map(|_| ())
    }

    fn append_all(&self, records: Vec<Record>) -> Pending {
        self.writer.append_all(records)
    }

    fn settle(&self, within: std::time::Duration) -> Result<(), AuditError> {
        self.writer.settle(within)
    }
}

/// Why the writer takes no more records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    No,
    /// A round left the store unfit (a write it could not undo): it may recover.
    ByRound,
    /// A sync failed: for good (see `Writer::round`).
    BySync,
}
