//! Hostile text in records, written to a real log and read back.

use std::fs;

use warden_audit::{
    AuditLog, Event, Filter, LOG_FILE, MAX_FIELD_BYTES, MAX_LINE_BYTES, Outcome, Record, read,
    verify,
};

use crate::common::audit_dir;

fn stored(message: &str) -> (String, String) {
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    log.append(
        Record::new(Event::Call, "r1")
            .with_outcome(Outcome::Error)
            .with_message(message),
    )
    .unwrap();
    log.append(Record::new(Event::Call, "r2")).unwrap();
    let text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(verify(&dir).unwrap().records, 2);
    let first = read(&dir, Filter::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    (
        first.record.message().unwrap().to_owned(),
        text.lines().next().unwrap().to_owned(),
    )
}

#[test]
fn newlines_cannot_start_a_forged_record() {
    let forged = "done\n{\"seq\":2,\"prev\":\"00\",\"record\":{},\"hash\":\"00\"}\r\nmore";
    let (msg, line) = stored(forged);
    assert_eq!(
        msg,
        "done\\n{\"seq\":2,\"prev\":\"00\",\"record\":{},\"hash\":\"00\"}\\r\\nmore"
    );
    assert!(!line.contains('\n') && !line.contains('\r'));
}

#[test]
fn terminal_escapes_and_nul_are_escaped() {
    let (msg, line) = stored("\u{1b}[2J\u{1b}]0;pwned\u{7}\0\u{9b}31m\u{202e}txt.exe");
    assert_eq!(
        msg,
        "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\0\\u{9b}31m\\u{202e}txt.exe"
    );
    assert!(!line.chars().any(char::is_control));
    assert!(!line.contains("\\u001b"), "{line}");
}

#[test]
fn broken_json_stays_a_string() {
    let (msg, _) = stored("\"}, \"outcome\": \"ok\", \"x\": {\"");
    assert_eq!(msg, "\"}, \"outcome\": \"ok\", \"x\": {\"");
}

#[test]
fn a_megabyte_message_is_truncated_with_a_marker() {
    let big = format!("{}\n", "A".repeat(1024 * 1024));
    let (msg, line) = stored(&big);
    assert!(msg.len() <= MAX_FIELD_BYTES);
    let kept = msg.find('…').unwrap();
    assert!(msg[..kept].bytes().all(|b| b == b'A'));
    assert_eq!(
        &msg[kept..],
        format!("…[truncated {} bytes]", big.len() - kept)
    );
    assert!(line.len() < 2 * MAX_FIELD_BYTES);
}

#[test]
fn every_text_field_is_sanitized_and_the_largest_record_fits_a_line() {
    let nasty = "\"\\".repeat(MAX_FIELD_BYTES); // doubles under JSON escaping, then again
    let r = Record::new(Event::Denial, &nasty)
        .with_tenant(&nasty)
        .with_extension(&nasty)
        .with_version(&nasty)
        .with_content_hash(&nasty)
        .with_capability(&nasty)
        .with_target(&nasty)
        .with_message(&nasty)
        .with_fuel(u64::MAX)
        .with_duration_ms(u64::MAX)
        .with_memory_peak_bytes(u64::MAX)
        .with_egress_bytes(u64::MAX);
    for f in [r.request_id(), r.tenant().unwrap(), r.target().unwrap()] {
        assert!(f.len() <= MAX_FIELD_BYTES);
        assert!(f.ends_with("bytes]"));
    }
    let (_tmp, dir) = audit_dir();
    let log = AuditLog::open(&dir).unwrap();
    log.append(r.clone()).unwrap();
    let text = fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert!(text.len() <= MAX_LINE_BYTES);
    let back = read(&dir, Filter::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(back.record, r);
}
