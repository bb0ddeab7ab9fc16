//! [`FileAuditSource`]: the read side through the `AuditSource` trait gives what the free
//! functions over the folder give.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use warden_audit::checkpoint::{self, CheckpointError};
use warden_audit::{
    AuditKey, AuditLog, AuditSource, ChainError, FileAuditSource, Filter, HEAD_FILE, HeadMac,
    HeadView, StoredRecord, read, verify_lines, verify_with,
};

use crate::common::{audit_dir, lines, rec, write_lines};

fn keyed_log(n: u64) -> (tempfile::TempDir, PathBuf, AuditKey) {
    let (tmp, dir) = audit_dir();
    let key_path = tmp.path().join("audit.key");
    let (key, created) = AuditKey::load_or_create(&key_path).unwrap();
    let log = AuditLog::open_keyed(&dir, key, created).unwrap();
    for i in 1..=n {
        log.append(rec(i)).unwrap();
    }
    (tmp, dir, AuditKey::load(&key_path).unwrap())
}

fn listed(r: Result<warden_audit::Reader, ChainError>) -> Vec<Result<StoredRecord, String>> {
    r.unwrap().map(|r| r.map_err(|e| e.to_string())).collect()
}

#[test]
fn the_trait_reads_verifies_and_checkpoints_as_the_functions_do() {
    let (_tmp, dir, key) = keyed_log(7);
    let source: Arc<dyn AuditSource> = Arc::new(FileAuditSource::new(&dir));
    assert_eq!(source.location(), dir.display().to_string());
    assert_eq!(
        FileAuditSource::in_data_dir(dir.parent().unwrap()),
        FileAuditSource::new(&dir)
    );

    for filter in [
        Filter::default(),
        Filter {
            tenant: Some("acme".into()),
            limit: Some(2),
            ..Filter::default()
        },
    ] {
        let by_trait = listed(source.read(filter.clone()));
        assert_eq!(by_trait, listed(read(&dir, filter)));
        assert!(!by_trait.is_empty());
    }

    let (mut a, mut b) = (Vec::new(), Vec::new());
    let by_trait = source
        .verify(Some(&key), &mut |s, h| a.push((s, h.to_owned())))
        .unwrap();
    let by_fn = verify_with(&dir, Some(&key), &mut |s, h| b.push((s, h.to_owned()))).unwrap();
    assert_eq!(by_trait, by_fn);
    let report = by_fn;
    assert_eq!(a, b);
    assert_eq!((by_trait.records, by_trait.head_mac), (7, HeadMac::Checked));

    let taken = checkpoint::take_from(&*source, Some(&key)).unwrap();
    let old = checkpoint::take(&dir, Some(&key)).unwrap();
    assert_eq!(
        (&taken.seq, &taken.hash, &taken.mac),
        (&old.seq, &old.hash, &old.mac)
    );
    let text = format!("{}\n{}\n", old.to_line(), taken.to_line());
    let by_trait = checkpoint::check_from(&*source, Some(&key), &text).unwrap();
    let by_fn = checkpoint::check(&dir, Some(&key), &text).unwrap();
    assert_eq!(by_trait.log, by_fn.log);
    assert_eq!(
        (by_trait.checkpoints, by_trait.macs_checked),
        (by_fn.checkpoints, by_fn.macs_checked)
    );
    assert_eq!((by_trait.checkpoints, by_trait.macs_checked), (2, 2));

    // The file's lines and head through `verify_lines` give the same report.
    let head: serde_json::Value =
        serde_json::from_str(fs::read_to_string(dir.join(HEAD_FILE)).unwrap().trim()).unwrap();
    let view = HeadView {
        seq: head["seq"].as_u64().unwrap(),
        hash: head["hash"].as_str().unwrap().to_owned(),
        mac: head["mac"].as_str().map(str::to_owned),
        location: dir.join(HEAD_FILE),
    };
    let rows = lines(&dir)
        .into_iter()
        .enumerate()
        .map(|(i, l)| Ok::<_, ChainError>((i as u64 + 1, l.into_bytes())));
    let by_lines = verify_lines(&view, rows, Some(&key), &mut |_, _| {}).unwrap();
    assert_eq!(by_lines, report);
}

#[test]
fn the_trait_reports_the_same_problems() {
    let (_tmp, dir, key) = keyed_log(5);
    let source = FileAuditSource::new(&dir);
    let good = checkpoint::take_from(&source, Some(&key)).unwrap();
    let mut l = lines(&dir);
    l.swap(1, 2);
    write_lines(&dir, &l);

    let by_trait = source.verify(Some(&key), &mut |_, _| {}).unwrap_err();
    let by_fn = verify_with(&dir, Some(&key), &mut |_, _| {}).unwrap_err();
    assert_eq!(by_trait.to_string(), by_fn.to_string());
    assert_eq!(by_trait.line(), Some(2));
    assert_eq!(
        listed(source.read(Filter::default())),
        listed(read(&dir, Filter::default()))
    );
    let e = checkpoint::check_from(&source, Some(&key), &good.to_line()).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Chain(ChainError::Seq { line: 2, .. })),
        "{e}"
    );
    assert!(checkpoint::take_from(&source, Some(&key)).is_err());

    // A missing log is missing through the trait too.
    let (_tmp2, empty) = audit_dir();
    let missing = FileAuditSource::new(&empty);
    assert!(matches!(
        missing.read(Filter::default()),
        Err(ChainError::Missing { .. })
    ));
    assert!(matches!(
        missing.verify(None, &mut |_, _| {}),
        Err(ChainError::Missing { .. })
    ));
}

#[test]
fn readers_and_sources_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<warden_audit::Reader>();
    send_sync::<FileAuditSource>();
    send_sync::<warden_audit::StoreLog>();
    send_sync::<AuditLog>();
}
