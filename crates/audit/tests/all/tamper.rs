//! `verify` against the edits an intruder (or a careless operator) makes: each must be found,
//! and the error must name the line.

use std::fs::{self, OpenOptions};
use std::io::Write as _;

use warden_audit::{ChainError, LOG_FILE, Outcome, verify};

use crate::common::{forge, hash_of, lines, log_with, rec, write_lines};

fn fails_at(dir: &std::path::Path, line: u64) -> ChainError {
    let err = verify(dir).unwrap_err();
    assert_eq!(err.line(), Some(line), "{err}");
    assert!(
        err.to_string().starts_with(&format!("line {line}: ")),
        "{err}"
    );
    err
}

#[test]
fn one_byte_edited_in_a_record() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l[2] = l[2].replace("message 3", "message 4");
    write_lines(&dir, &l);
    let err = fails_at(&dir, 3);
    assert!(matches!(err, ChainError::Hash { .. }), "{err}");
    assert!(err.to_string().contains("edited"), "{err}");
}

#[test]
fn one_byte_edited_in_place_on_disk() {
    // Change one digit of record 2's duration directly in the file.
    let (_tmp, dir) = log_with(3);
    let path = dir.join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let l1 = bytes.iter().position(|&b| b == b'\n').unwrap();
    let at = l1 + 1 + find(&bytes[l1 + 1..], b"\"duration_ms\":2") + 14;
    assert_eq!(bytes[at], b'2');
    bytes[at] = b'9';
    fs::write(&path, bytes).unwrap();
    assert!(matches!(fails_at(&dir, 2), ChainError::Hash { .. }));
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn an_edit_that_breaks_the_json() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l[3] = l[3].replacen('{', "[", 1);
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 4), ChainError::Malformed { .. }));
}

#[test]
fn an_edited_record_with_its_hash_recomputed() {
    // The forger fixes the edited line's own hash; the next line no longer links to it.
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    let forged = rec(2).with_outcome(Outcome::Denied);
    l[1] = forge(2, &hash_of(&l[0]), &forged);
    write_lines(&dir, &l);
    let err = fails_at(&dir, 3);
    assert!(matches!(err, ChainError::Prev { .. }), "{err}");
}

#[test]
fn a_record_removed_from_the_middle() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l.remove(2);
    write_lines(&dir, &l);
    let err = fails_at(&dir, 3);
    assert!(
        matches!(
            err,
            ChainError::Seq {
                expected: 3,
                found: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("removed"), "{err}");
}

#[test]
fn two_records_swapped() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l.swap(1, 2);
    write_lines(&dir, &l);
    let err = fails_at(&dir, 2);
    assert!(
        matches!(
            err,
            ChainError::Seq {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_record_inserted() {
    let (_tmp, dir) = log_with(3);
    let mut l = lines(&dir);
    let dup = l[1].clone();
    l.insert(2, dup);
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 3), ChainError::Seq { .. }));
}

#[test]
fn the_last_record_removed() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l.pop();
    write_lines(&dir, &l);
    let err = fails_at(&dir, 5);
    assert!(
        matches!(
            err,
            ChainError::Truncated {
                log_seq: 4,
                head_seq: 5,
                ..
            }
        ),
        "{err}"
    );
    // Every record gone, too.
    write_lines(&dir, &[]);
    assert!(matches!(fails_at(&dir, 1), ChainError::Truncated { .. }));
}

#[test]
fn a_forged_record_appended_without_the_head() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    let forged = forge(6, &hash_of(&l[4]), &rec(6).with_message("all is well"));
    l.push(forged);
    write_lines(&dir, &l);
    let err = fails_at(&dir, 6);
    assert!(
        matches!(err, ChainError::Unrecorded { head_seq: 5, .. }),
        "{err}"
    );
}

#[test]
fn the_last_record_replaced_with_a_valid_one() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l[4] = forge(5, &hash_of(&l[3]), &rec(5).with_outcome(Outcome::Error));
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 5), ChainError::HeadHash { .. }));
}

#[test]
fn a_garbage_line() {
    let (_tmp, dir) = log_with(5);
    let mut l = lines(&dir);
    l.insert(2, "\u{1b}[2J not json at all \u{7}".to_owned());
    write_lines(&dir, &l);
    let err = fails_at(&dir, 3);
    assert!(matches!(err, ChainError::Malformed { .. }), "{err}");
    // What the error quotes from the file is escaped.
    assert!(!err.to_string().chars().any(char::is_control), "{err:?}");

    let (_tmp, dir) = log_with(2);
    let mut l = lines(&dir);
    l.push(String::new());
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 3), ChainError::Malformed { .. }));
}

#[test]
fn an_unknown_field() {
    let (_tmp, dir) = log_with(3);
    let mut l = lines(&dir);
    l[1] = l[1].replace("{\"seq\":2,", "{\"seq\":2,\"admin\":true,");
    write_lines(&dir, &l);
    let err = fails_at(&dir, 2);
    assert!(err.to_string().contains("admin"), "{err}");
}

#[test]
fn a_non_canonical_but_equivalent_line() {
    let (_tmp, dir) = log_with(3);
    let mut l = lines(&dir);
    l[1] = l[1].replacen("\"seq\":2", "\"seq\": 2", 1);
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 2), ChainError::NotCanonical { .. }));
}

#[test]
fn a_control_character_smuggled_in_with_a_valid_hash() {
    // A line that is well-formed and correctly hashed but holds a raw ESC (via a JSON escape):
    // warden never writes one, so it is refused.
    let (_tmp, dir) = log_with(3);
    let mut l = lines(&dir);
    let v = l[2].replace("\"message 3\"", "\"\\u001b[31mred\"");
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["record"]["message"], "\u{1b}[31mred");
    // Recompute the hash over the edited bytes.
    let unsigned = {
        let cut = l[2].rfind(",\"hash\"").unwrap();
        format!("{}}}", &l[2][..cut]).replace("\"message 3\"", "\"\\u001b[31mred\"")
    };
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(unsigned.as_bytes()));
    l[2] = format!("{},\"hash\":\"{hash}\"}}", &unsigned[..unsigned.len() - 1]);
    write_lines(&dir, &l);
    let err = fails_at(&dir, 3);
    assert!(err.to_string().contains("`message`"), "{err}");
}

#[test]
fn an_overlong_line() {
    let (_tmp, dir) = log_with(2);
    let mut l = lines(&dir);
    l.insert(1, "x".repeat(warden_audit::MAX_LINE_BYTES + 1));
    write_lines(&dir, &l);
    assert!(matches!(fails_at(&dir, 2), ChainError::TooLong { .. }));
}

#[test]
fn a_torn_last_line() {
    let (_tmp, dir) = log_with(2);
    let l = lines(&dir);
    let torn = &l[1][..l[1].len() / 2];
    fs::write(dir.join(LOG_FILE), format!("{}\n{torn}", l[0])).unwrap();
    // The head still says 2, the log holds 1 and a half.
    assert!(matches!(fails_at(&dir, 2), ChainError::Torn { .. }));
}

#[test]
fn appending_by_hand_with_a_newline_in_the_message() {
    // What an unsanitized logger would allow: a message that closes the record and starts a
    // new one. Here the attacker writes the bytes directly; verify catches it.
    let (_tmp, dir) = log_with(2);
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    writeln!(f, "{{\"seq\":3}}").unwrap();
    assert!(matches!(fails_at(&dir, 3), ChainError::Malformed { .. }));
}
