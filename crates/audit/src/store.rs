//! [`RoundStore`]: where the group commit ([`crate::AuditLog`], [`crate::StoreLog`]) puts its
//! rounds. The files of an audit folder are the first store (`round.rs`); a database can be
//! another, with no change to the writer thread.

use crate::chain::Encoded;
use crate::error::AuditError;
use crate::record::Record;

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number (1 for the first record), which is also its line number.
    pub seq: u64,
    /// Its hash: lowercase hex SHA-256, the `prev` of the next record.
    pub hash: String,
}

/// What one round did.
#[derive(Debug)]
pub struct Round {
    /// One answer for each of the first records of the batch, in order. Fewer than the batch
    /// when the round is full: the rest go back to the front of the queue for the next round.
    /// An empty answer to a batch fails the whole batch with [`AuditError::Broken`] (a round
    /// must make progress).
    pub results: Vec<Result<Appended, AuditError>>,
    /// Whether the round wrote something that [`RoundStore::sync`] must make durable. Rounds
    /// with `dirty` set are what [`crate::AuditLog::sync_rounds`] counts.
    pub dirty: bool,
    /// The store could not be put back as it was after a failure (the chain may be damaged):
    /// the writer fails every later record with [`AuditError::Broken`].
    pub broken: bool,
}

/// One durable round of the group commit, driven by the writer thread of a
/// [`crate::StoreLog`] (or [`crate::AuditLog`]), which calls, for each round:
///
/// 1. [`begin`](RoundStore::begin): wait for exclusive access to the end of the chain (other
///    processes or hosts append to it too). Only then does the writer take the queued records,
///    so that those queued while it waited join this round. An error fails the records queued
///    then.
/// 2. [`append_round`](RoundStore::append_round) with those records (at most 4096, the
///    writer's cap per round), which also ends the exclusive access: read the current
///    head and check its MAC under the store's [`crate::AuditKey`] (if it has one), chain the
///    records after it with [`encode_after`], store the lines and the new head
///    (with its MAC). A record that cannot be encoded fails alone and takes no seq; a failure
///    of the head or of the write fails every record of the round and must leave the store as
///    it was (or say `broken`).
/// 3. [`sync`](RoundStore::sync) if the round was `dirty`, after which (and only after
///    which) each caller gets its answer. A failed sync fails the round's records and breaks
///    the writer. A store whose `append_round` is durable when it returns (a committed
///    transaction) has nothing to do here.
///
/// The store owns its key: it needs it before the first round (to write a genesis head, or
/// check the head it finds when opened).
pub trait RoundStore: Send {
    /// Names the store in messages: a folder, a database table.
    fn location(&self) -> String;

    /// Waits for exclusive access to the end of the chain, held until the end of the next
    /// [`append_round`](RoundStore::append_round). Does nothing by default, for a store that
    /// takes it in `append_round`.
    fn begin(&mut self) -> Result<(), AuditError> {
        Ok(())
    }

    /// Appends `batch` after the current head, in order, and ends the exclusive access. See
    /// the trait.
    fn append_round(&mut self, batch: &[&Record]) -> Round;

    /// Makes what the last rounds wrote durable; needs no exclusive access.
    fn sync(&mut self) -> Result<(), AuditError> {
        Ok(())
    }

    /// After a round that left the store broken: makes it fit for rounds again if it can,
    /// trusting nothing written since the last good round (whatever is after the head is set
    /// aside by the next round, as after a crash). Tried before each round while broken; by
    /// default the store stays broken.
    fn recover(&mut self) -> Result<(), AuditError> {
        Err(AuditError::Broken)
    }
}

/// One step of the chain: `record` stored right after the record (`prev_seq`, `prev_hash`)
/// ((0, [`crate::GENESIS_HASH`]) for the first), as every store writes it: the line and hash the
/// file log appends, and a [`crate::RoundStore`] of another kind must store.
///
/// Fails with [`AuditError::Encode`] or [`AuditError::TooLarge`] (over [`crate::MAX_LINE_BYTES`])
/// for a record that cannot be stored, which then takes no seq, and with
/// [`AuditError::Broken`] after seq `u64::MAX`.
pub fn encode_after(
    prev_seq: u64,
    prev_hash: &str,
    record: &Record,
) -> Result<Encoded, AuditError> {
    let seq = prev_seq.checked_add(1).ok_or(AuditError::Broken)?;
    let encoded = crate::chain::encode(seq, prev_hash, record).map_err(AuditError::Encode)?;
    if encoded.line.len() > crate::MAX_LINE_BYTES + 1 {
        return Err(AuditError::TooLarge {
            len: encoded.line.len() - 1,
        });
    }
    Ok(encoded)
}
