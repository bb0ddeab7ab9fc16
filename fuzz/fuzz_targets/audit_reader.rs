#![no_main]
//! Any bytes as an audit folder (`audit.head` + `audit.jsonl`), read with `read`, checked with
//! `verify` and opened with `AuditLog::open`. Nothing panics or hangs; every record `read` yields
//! has clean text fields and consecutive seqs from 1; an error names a line inside the log; a
//! log that `verify` passes reads back completely, opens, and still verifies after an append;
//! and a torn tail that `open` sets aside leaves a log that verifies.
//!
//! Input: the first byte selects the layout.
//! - Bit 7 clear: raw files, unkeyed. The head is the next 256 bytes (the head file's fixed length), or
//!   with bit 4 set the next `(byte & 0x0f) * 9` bytes (a wrong length, 0 = empty); the log is
//!   the rest. Bit 6 leaves out `audit.head`, bit 5 leaves out `audit.jsonl`.
//! - Bit 7 set: a valid keyed log (the head under an audit key, checked by every verify and
//!   open) is written with `AuditLog` from records made of the input (fields
//!   separated by `|`, records by NUL), then damaged once as the next bytes say (nothing,
//!   truncate, flip a byte, drop the head, append bytes, flip a head byte, truncate the head,
//!   drop a line, a crash in the middle of the last append, or records cut from the end with
//!   the head rewritten to match, without the key). An undamaged log must verify; a
//!   damaged log (other than in the head's padding, where JSON whitespace is interchangeable)
//!   must not.
//!
//! One folder per process is reused (on tmpfs when there is one, since appends sync), so disk
//! use stays at one input's worth.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use warden_audit::{
    AuditKey, AuditLog, ChainError, Decision, Event, Filter, GENESIS_HASH, HEAD_FILE, LOG_FILE,
    Outcome, Record, StoredRecord, TORN_FILE, is_clean, read, verify_with,
};

/// This process's audit key file (beside its folder), for the keyed logs of structured inputs.
fn key_path() -> PathBuf {
    dir().with_extension("key")
}

/// The key, or `None` for raw inputs (which carry no MAC). Opening with it never adopts an
/// unkeyed head: the key exists before any keyed log is written.
fn key(keyed: bool) -> Option<AuditKey> {
    keyed.then(|| {
        AuditKey::load_or_create(&key_path())
            .expect("the fuzz key file")
            .0
    })
}

fn verify(dir: &Path, keyed: bool) -> Result<warden_audit::VerifyReport, ChainError> {
    verify_with(dir, key(keyed).as_ref(), &mut |_, _| {})
}

fn open(dir: &Path, keyed: bool) -> Result<AuditLog, warden_audit::AuditError> {
    match key(keyed) {
        Some(k) => AuditLog::open_keyed(dir, k, false),
        None => AuditLog::open(dir),
    }
}

/// The fixed length of `audit.head` (private to the crate; heads of older logs were 128).
const HEAD_LEN: usize = 256;

const EVENTS: [Event; 11] = [
    Event::Call,
    Event::Denial,
    Event::Grant,
    Event::Limit,
    Event::Install,
    Event::Upgrade,
    Event::Uninstall,
    Event::Publish,
    Event::VerificationFailure,
    Event::Load,
    Event::Recovery,
];

const OUTCOMES: [Outcome; 10] = [
    Outcome::Ok,
    Outcome::Error,
    Outcome::Trap,
    Outcome::Timeout,
    Outcome::MemoryLimit,
    Outcome::FuelExhausted,
    Outcome::TooLarge,
    Outcome::Busy,
    Outcome::Denied,
    Outcome::Invalid,
];

const DIR_PREFIX: &str = "warden-fuzz-audit-";

/// This process's folder. libFuzzer exits without running destructors, so each process leaves
/// its folder behind; the folders of processes that are gone are removed here instead.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // Without /proc (not Linux) there is no telling which processes are gone.
        let entries = fs::read_dir(&base)
            .ok()
            .filter(|_| Path::new("/proc/self").exists());
        for entry in entries.into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        base.join(format!("{DIR_PREFIX}{}", std::process::id()))
    })
}

/// Empties the folder: the three files the log may leave there.
fn reset(dir: &Path) {
    for name in [LOG_FILE, HEAD_FILE, TORN_FILE] {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("cleaning the fuzz folder {}: {e}", dir.display()),
        }
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .expect("creating the fuzz folder");
}

fn check_error(e: &ChainError, lines: u64) {
    let _ = e.to_string();
    if let Some(line) = e.line() {
        assert!(
            (1..=lines + 1).contains(&line),
            "error on line {line} of a {lines}-line log: {e}"
        );
    }
}

fn check_records(records: &[StoredRecord]) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "records out of sequence");
        assert!(
            r.hash.len() == 64
                && r.hash
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "bad hash {:?}",
            r.hash
        );
        assert!(
            !r.line.chars().any(char::is_control),
            "raw control character in a stored line"
        );
        let rec = &r.record;
        let texts = [
            Some(rec.time()),
            Some(rec.request_id()),
            rec.tenant(),
            rec.extension(),
            rec.version(),
            rec.content_hash(),
            rec.capability(),
            rec.target(),
            rec.message(),
        ];
        for text in texts.into_iter().flatten() {
            assert!(
                is_clean(text),
                "record {} holds an unclean field {text:?}",
                r.seq
            );
        }
    }
}

/// Runs the reader, the verifier and `open` over the folder; returns whether `verify` passed
/// before `open` (which may repair or create files) ran.
fn check_folder(dir: &Path, keyed: bool) -> bool {
    let log = fs::read(dir.join(LOG_FILE)).ok();
    let lines = log
        .as_ref()
        .map_or(0, |l| l.iter().filter(|&&b| b == b'\n').count() as u64);

    // Reading does not use the head: whatever it yields has passed every line check.
    let read_all = match read(dir, Filter::default()) {
        Ok(reader) => {
            let mut records = Vec::new();
            let mut failed = false;
            for r in reader {
                match r {
                    Ok(r) => records.push(r),
                    Err(e) => {
                        check_error(&e, lines);
                        failed = true;
                    }
                }
            }
            check_records(&records);
            Some((records, failed))
        }
        Err(e) => {
            check_error(&e, lines);
            None
        }
    };
    if let Ok(reader) = read(
        dir,
        Filter {
            event: Some(Event::Call),
            limit: Some(1),
            ..Filter::default()
        },
    ) {
        let calls: Vec<_> = reader.filter_map(Result::ok).collect();
        assert!(calls.len() <= 1, "limit ignored");
        assert!(
            calls.iter().all(|r| r.record.event() == Event::Call),
            "filter ignored"
        );
    }

    let verified = verify(dir, keyed);
    match &verified {
        Ok(report) => {
            let (records, failed) =
                read_all.expect("verify passed but read could not open the log");
            assert!(!failed, "verify passed but read found a bad line");
            assert_eq!(records.len() as u64, report.records);
            assert_eq!(report.records, lines);
            let last = records.last().map_or(GENESIS_HASH, |r| r.hash.as_str());
            assert_eq!(report.last_hash, last);
        }
        Err(e) => check_error(e, lines),
    }

    match open(dir, keyed) {
        Ok(log) => {
            let repaired = dir.join(TORN_FILE).exists();
            let expected = match (&verified, repaired) {
                (Ok(report), false) => Some(report.records + 1),
                (Ok(_), true) => panic!("open set aside a tail of a log that verified"),
                // The complete lines, the recovery record, and the one appended below.
                (Err(_), true) => Some(lines + 2),
                // Open checks only the end of the log, so it may accept an edit further up.
                (Err(_), false) => None,
            };
            let appended = log
                .append(Record::new(Event::Call, "fuzz-append").with_message("after open"))
                .expect("append after a successful open");
            drop(log);
            if let Some(expected) = expected {
                assert_eq!(appended.seq, expected);
                match verify(dir, keyed) {
                    Ok(report) => assert_eq!(report.records, expected),
                    Err(e) => panic!("log no longer verifies after open and append: {e}"),
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if let Ok(report) = &verified {
                panic!(
                    "a log that verifies ({} records) does not open: {e:?}",
                    report.records
                );
            }
        }
    }
    verified.is_ok()
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("writing a fuzz file");
}

fn raw(dir: &Path, flags: u8, rest: &[u8]) {
    let head_len = if flags & 0x10 != 0 {
        usize::from(flags & 0x0f) * 9
    } else {
        HEAD_LEN
    };
    let (head, log) = rest.split_at(head_len.min(rest.len()));
    if flags & 0x40 == 0 {
        write(&dir.join(HEAD_FILE), head);
    }
    if flags & 0x20 == 0 {
        write(&dir.join(LOG_FILE), log);
    }
    check_folder(dir, false);
}

/// A record from one NUL-separated piece of input: event, outcome, time, then text fields.
fn record(piece: &[u8]) -> Record {
    let [e, o, t, text @ ..] = piece else {
        return Record::new(Event::Call, String::from_utf8_lossy(piece));
    };
    let text = String::from_utf8_lossy(text);
    let mut fields = text.split('|');
    let mut r = Record::new(
        EVENTS[usize::from(*e) % EVENTS.len()],
        fields.next().unwrap_or(""),
    )
    .at(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(*t) << 32))
    .with_outcome(OUTCOMES[usize::from(*o) % OUTCOMES.len()]);
    if o & 0x80 != 0 {
        r = r.with_decision(if o & 0x40 != 0 {
            Decision::Allow
        } else {
            Decision::Deny
        });
    }
    if let Some(f) = fields.next() {
        r = r.with_tenant(f).with_fuel(u64::from(*t));
    }
    if let Some(f) = fields.next() {
        r = r.with_extension(f).with_version(f);
    }
    if let Some(f) = fields.next() {
        r = r.with_capability(f).with_target(f);
    }
    let rest: Vec<&str> = fields.collect();
    if !rest.is_empty() {
        r = r.with_message(rest.join("|"));
    }
    r
}

fn structured(dir: &Path, rest: &[u8]) {
    let [kind, xor, lo, hi, material @ ..] = rest else {
        return;
    };
    let pos = usize::from(u16::from_le_bytes([*lo, *hi]));
    let log_path = dir.join(LOG_FILE);
    let head_path = dir.join(HEAD_FILE);
    // The head and the log's length before the last append, to replay a crash in the middle of it.
    let mut before_last = None;
    {
        let log = open(dir, true).expect("a new log opens");
        for piece in material.split(|&b| b == 0).take(8) {
            let head = fs::read(&head_path).expect("reading the head");
            let len = fs::metadata(&log_path).expect("reading the log").len();
            before_last = Some((head, len as usize));
            log.append(record(piece)).expect("append to a new log");
        }
    }
    match verify(dir, true) {
        Ok(_) => {}
        Err(e) => panic!("a log written by AuditLog does not verify: {e}"),
    }

    let mut log = fs::read(&log_path).expect("reading the log");
    let mut head = fs::read(&head_path).expect("reading the head");
    let xor = xor | 1;
    // Whether the damage must be detected by `verify`.
    let damaged = match kind % 10 {
        // Nothing.
        0 => false,
        // Cut the log short (the head still names the last record).
        1 => {
            let cut = pos % (log.len() + 1);
            let damaged = cut < log.len();
            log.truncate(cut);
            write(&log_path, &log);
            damaged
        }
        // Flip bits of one byte of the log.
        2 if !log.is_empty() => {
            let i = pos % log.len();
            log[i] ^= xor;
            write(&log_path, &log);
            true
        }
        // Lose the head.
        3 => {
            fs::remove_file(&head_path).expect("removing the head");
            true
        }
        // Append bytes to the log.
        4 => {
            let extra = &material[..material.len().min(pos % 64)];
            OpenOptions::new()
                .append(true)
                .open(&log_path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, extra))
                .expect("appending to the log");
            !extra.is_empty()
        }
        // Flip bits of one byte of the head: a space of its padding may become other JSON
        // whitespace and still mean the same, so only the absence of panics is checked.
        5 => {
            let i = pos % head.len();
            head[i] ^= xor;
            write(&head_path, &head);
            false
        }
        // Cut the head short.
        6 => {
            let cut = pos % head.len();
            head.truncate(cut);
            write(&head_path, &head);
            true
        }
        // Drop one line of the log.
        7 if !log.is_empty() => {
            let mut lines: Vec<&[u8]> = log.split_inclusive(|&b| b == b'\n').collect();
            lines.remove(pos % lines.len());
            write(&log_path, &lines.concat());
            true
        }
        // A crash in the middle of the last append: the head from before it and part of its
        // line. `open` must set the part aside (or, if it is the whole line, refuse the log).
        8 => match before_last {
            Some((old_head, start)) => {
                let cut = start + pos % (log.len() - start + 1);
                log.truncate(cut);
                write(&log_path, &log);
                write(&head_path, &old_head);
                cut != start
            }
            None => false,
        },
        // Issue 9, F6: records cut from the end and the head rewritten to name the new last
        // one, in the head's documented format (without the key, so without a MAC).
        9 if !log.is_empty() => {
            let lines: Vec<&[u8]> = log.split_inclusive(|&b| b == b'\n').collect();
            let keep = pos % lines.len();
            let last = keep
                .checked_sub(1)
                .and_then(|i| serde_json::from_slice::<serde_json::Value>(lines[i]).ok())
                .and_then(|v| v["hash"].as_str().map(str::to_owned))
                .unwrap_or_else(|| GENESIS_HASH.to_owned());
            write(&log_path, &lines[..keep].concat());
            let json = format!("{{\"seq\":{keep},\"hash\":\"{last}\"}}");
            let mut h = vec![b' '; HEAD_LEN];
            h[..json.len()].copy_from_slice(json.as_bytes());
            h[HEAD_LEN - 1] = b'\n';
            write(&head_path, &h);
            true
        }
        _ => false,
    };
    let verified = check_folder(dir, true);
    if kind % 10 == 0 {
        assert!(verified, "an undamaged log does not verify");
    }
    if damaged {
        assert!(!verified, "damage of kind {} went unnoticed", kind % 10);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = dir();
    reset(dir);
    if flags & 0x80 == 0 {
        raw(dir, flags, rest);
    } else {
        structured(dir, rest);
    }
});
