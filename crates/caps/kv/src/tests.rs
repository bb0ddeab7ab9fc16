//! This crate's own checks, and the backend suite ([`crate::testing`]) on [`MemoryKv`].

use crate::*;

/// Every check of the backend suite, on a fresh [`MemoryKv`] each.
mod memory_kv {
    crate::kv_backend_tests!(|| Box::new(crate::MemoryKv::new()));
}

#[test]
fn bucket_names_are_bounded() {
    assert_eq!(BucketName::new(""), Err(KvError::BadBucket));
    assert_eq!(
        BucketName::new(&"b".repeat(MAX_BUCKET_BYTES + 1)),
        Err(KvError::BadBucket)
    );
    assert!(BucketName::new(&"b".repeat(MAX_BUCKET_BYTES)).is_ok());
}

/// The shared body: lengths and reads once per distinct key, no read at all when over the
/// cap, and a cancel flag stops it between keys.
#[test]
fn batch_read_dedups_checks_sizes_first_and_stops_when_cancelled() {
    use std::cell::Cell;
    let keys: Vec<String> = ["a", "b", "a", "a", "c", "b"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let (lens, reads) = (Cell::new(0), Cell::new(0));
    let value = |k: &str| (k != "c").then(|| vec![b'v'; 10]);
    let len = |k: &str| {
        lens.set(lens.get() + 1);
        Ok(value(k).map(|v| v.len() as u64))
    };
    let read = |k: &str| {
        reads.set(reads.get() + 1);
        Ok(value(k))
    };
    let out = batch_read(&keys, 1000, &Cancel::new(), len, read).unwrap();
    assert_eq!((lens.get(), reads.get()), (3, 3));
    assert_eq!(out.len(), 6);
    assert_eq!(out[2], Some(vec![b'v'; 10]));
    assert_eq!(out[4], None);

    // 5 present answers of 1 + 10 bytes = 55 > 54: refused with no read.
    reads.set(0);
    let err = batch_read(&keys, 54, &Cancel::new(), len, read).unwrap_err();
    assert_eq!(err, KvError::ReadTooLarge { len: 55, max: 54 });
    assert_eq!(reads.get(), 0);

    // Cancelled after the first read: stops there.
    reads.set(0);
    let cancel = Cancel::new();
    let read_then_cancel = |k: &str| {
        reads.set(reads.get() + 1);
        cancel.cancel();
        Ok(value(k))
    };
    let err = batch_read(&keys, 1000, &cancel, len, read_then_cancel).unwrap_err();
    assert_eq!(err, KvError::Cancelled);
    assert_eq!(reads.get(), 1);
}

/// In memory, a `get` of a value within the size is answered at once (`get_now`), a larger one
/// left to the blocking pool; keys are read at once, writes and batches never.
#[test]
fn memory_answers_small_reads_at_once_and_leaves_large_ones() {
    let kv = MemoryKv::new();
    let s = Scope::new(
        "t".parse().unwrap(),
        "a.b".parse().unwrap(),
        BucketName::new("default").unwrap(),
    );
    kv.set(&s, "small", b"v", &Quota::default()).unwrap();
    kv.set(&s, "large", &[7u8; 2048], &Quota::default())
        .unwrap();
    let now = |key: &str| kv.get_now(&s, key, 1024).map(Result::unwrap);
    assert_eq!(now("small"), Some(Some(b"v".to_vec())));
    assert_eq!(now("missing"), Some(None));
    assert_eq!(now("large"), None);
    assert!(!kv.may_block(KvOp::ReadKeys) && kv.may_block(KvOp::Other));
}
