//! Files for Extism plug-ins that use WASI preview 1: the components' mounts, attacked from
//! inside by the `extism-wasi` fixture through Rust's std (so through preview 1 as any PDK
//! reaches it), with real host folders. Each refusal is checked three ways: the plug-in got an
//! error (the call went on), an `fs` denial was audited, and nothing outside was read or
//! written.

use std::fs;

use warden_audit::{Event, Record};
use warden_host::{ExtensionId, Grant};

use crate::fs::{
    QUOTA_BYTES, SECRET, disk_use, files_dir, host_dir, mounts, outside, quota_denials, quota_lab,
    snapshot,
};
use crate::support::{Lab, text};

const WASI: &str = "extism-wasi";
const ID: &str = "warden.extism-wasi";

async fn op(lab: &Lab, id: &ExtensionId, input: &str) -> String {
    match lab.call(id, "fs", input.as_bytes()).await {
        Ok(out) => text(&out),
        Err(e) => panic!("fs {input:?} failed the call: {}", e.error),
    }
}

fn fs_denials(lab: &Lab) -> Vec<Record> {
    lab.audit
        .records()
        .into_iter()
        .filter(|r| r.event() == Event::Denial && r.capability() == Some("filesystem"))
        .collect()
}

/// Runs `input`, which must be refused by the host: an error for the plug-in, a new `fs`
/// denial whose target contains `target`, and no secret in the answer.
async fn denied(lab: &Lab, id: &ExtensionId, input: &str, target: &str) -> Record {
    let before = fs_denials(lab).len();
    let out = op(lab, id, input).await;
    assert!(out.starts_with("err:"), "{input}: {out}");
    assert!(!out.contains(SECRET), "{input}: leaked {out}");
    let new = fs_denials(lab);
    let found = new[before..]
        .iter()
        .find(|r| r.target().is_some_and(|t| t.contains(target)));
    match found {
        Some(r) => r.clone(),
        None => panic!(
            "{input}: refused ({out}) but no fs denial naming {target:?}: {:?}",
            &new[before..]
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_with_wasi_gets_its_mounts_and_nothing_outside_them() {
    let lab = Lab::new();
    let outside = outside(&lab);
    let id = lab.load_granted(
        WASI,
        mounts(&["/data"], &["/shared"]),
        &"filesystem".parse().unwrap(),
    );
    let data = host_dir(&lab, "default", ID, "data");
    let shared = host_dir(&lab, "default", ID, "shared");
    fs::write(shared.join("note.txt"), "read-only note").unwrap();
    let before_outside = snapshot(&outside);
    let before_shared = snapshot(&shared);

    // What is granted works, and lands in the install's folder.
    assert_eq!(op(&lab, &id, "write|/data/a.txt|hi").await, "ok");
    assert_eq!(fs::read_to_string(data.join("a.txt")).unwrap(), "hi");
    assert_eq!(op(&lab, &id, "append|/data/a.txt|!").await, "ok");
    assert_eq!(op(&lab, &id, "read|/data/a.txt").await, "ok:hi!");
    assert_eq!(op(&lab, &id, "mkdir|/data/sub").await, "ok");
    assert_eq!(
        op(&lab, &id, "rename|/data/a.txt|/data/sub/b.txt").await,
        "ok"
    );
    assert_eq!(op(&lab, &id, "list|/data/sub").await, "ok:b.txt");
    assert_eq!(op(&lab, &id, "symlink|sub/b.txt|inside").await, "ok");
    assert_eq!(op(&lab, &id, "read|/data/inside").await, "ok:hi!");
    assert_eq!(
        op(&lab, &id, "read|/shared/note.txt").await,
        "ok:read-only note"
    );
    let grants: Vec<String> = lab
        .audit
        .records()
        .iter()
        .filter(|r| r.event() == Event::Grant && r.capability() == Some("filesystem"))
        .filter_map(|r| r.target().map(str::to_string))
        .collect();
    assert!(grants.contains(&"/data (read-write)".into()), "{grants:?}");
    assert!(grants.contains(&"/shared (read-only)".into()), "{grants:?}");

    // Out of the mount by `..`, by a symlink made to climb, by an absolute link.
    let r = denied(
        &lab,
        &id,
        "read|/data/../../../outside/secret.txt",
        "in /data",
    )
    .await;
    assert!(
        r.message().is_some_and(|m| m.contains("not-permitted")),
        "{r:?}"
    );
    denied(&lab, &id, "symlink|../../../../outside|esc", "symlink").await;
    denied(&lab, &id, "symlink|/etc/passwd|abs", "symlink").await;
    assert!(!data.join("esc").exists() && !data.join("abs").exists());
    // A path no mount holds does not exist for the plug-in (wasi-libc finds no preopen).
    assert!(op(&lab, &id, "read|/etc/passwd").await.starts_with("err:"));

    // Every change to the read-only mount is refused and audited.
    for input in [
        "write|/shared/new.txt|x",
        "write|/shared/note.txt|changed",
        "append|/shared/note.txt|x",
        "set-size|/shared/note.txt|0",
        "remove|/shared/note.txt",
        "mkdir|/shared/d",
        "set-times|/shared/note.txt",
        "rename|/data/sub/b.txt|/shared/b.txt",
        "link|/data/sub/b.txt|/shared/b.txt",
        // Opened for reading, then written: `badf`, a refusal audited all the same.
        "write-ro|/shared/note.txt|changed",
    ] {
        denied(&lab, &id, input, "/shared").await;
    }
    assert_eq!(snapshot(&shared), before_shared);
    assert_eq!(snapshot(&outside), before_outside);
    // The host still serves it.
    assert_eq!(op(&lab, &id, "read|/data/sub/b.txt").await, "ok:hi!");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_not_granted_is_refused_and_audited_for_a_plug_in() {
    let lab = Lab::new();
    let id = lab.load_granted(WASI, mounts(&["/data"], &[]), &Grant::None);
    for (input, op_name) in [
        ("write|/data/a.txt|x", "open"),
        ("read|/data/a.txt", "open"),
        ("list|/data", "open"),
        ("mkdir|/data/d", "mkdir"),
        ("stat|/data/a.txt", "stat"),
        // The preopen itself (descriptor 3): not even its attributes.
        ("fstat-fd|-|3", "stat"),
    ] {
        let r = denied(&lab, &id, input, "in /data").await;
        assert!(r.target().unwrap().starts_with(op_name), "{input}: {r:?}");
        assert!(
            r.message().is_some_and(|m| m.contains("not granted")),
            "{input}: {r:?}"
        );
    }
    // Nothing was made on the host for it.
    let files = files_dir(&lab, "default", ID);
    assert!(
        !files.exists() || disk_use(&files).1 == 0,
        "{:?}",
        fs::read_dir(&files).map(|d| d.count())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_cannot_write_past_the_file_quota() {
    let lab = quota_lab();
    let id = lab.load_granted(WASI, mounts(&["/data"], &[]), &Grant::All);
    let files = files_dir(&lab, "default", ID);
    let q = QUOTA_BYTES;

    // One write past the quota: refused whole, audited, nothing left of it.
    let out = op(&lab, &id, &format!("fill|/data/big|{}", q + 1)).await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    assert!(!quota_denials(&lab).is_empty());
    assert!(disk_use(&files).0 <= q, "{:?}", disk_use(&files));

    // Files that fit are written until the quota is full; removing one makes room again.
    let third = q / 3;
    assert_eq!(op(&lab, &id, &format!("fill|/data/a|{third}")).await, "ok");
    assert_eq!(op(&lab, &id, &format!("fill|/data/b|{third}")).await, "ok");
    let out = op(&lab, &id, &format!("fill|/data/c|{third}")).await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    assert_eq!(op(&lab, &id, "remove|/data/a").await, "ok");
    assert_eq!(op(&lab, &id, &format!("fill|/data/c|{third}")).await, "ok");
    assert!(disk_use(&files).0 <= q, "{:?}", disk_use(&files));
    assert_eq!(op(&lab, &id, "remove|/data/b").await, "ok");
    assert_eq!(op(&lab, &id, "remove|/data/c").await, "ok");

    // A far write (a sparse file), and a size set past the quota: charged their length.
    let out = op(&lab, &id, "pwrite-far|/data/sparse|1099511627776").await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    let out = op(&lab, &id, "seek-far|/data/sparse|1099511627776").await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    assert_eq!(op(&lab, &id, "write|/data/s|x").await, "ok");
    let out = op(&lab, &id, "set-size|/data/s|1099511627776").await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    assert!(fs::metadata(files.join("data/s")).unwrap().len() < q);

    // A file deleted while open is not written again: a walk could not count it.
    let before = quota_denials(&lab).len();
    let out = op(&lab, &id, "unlinked|/data/u|5000").await;
    assert_eq!(out, "err:StorageFull:51", "{out}");
    let reasons = quota_denials(&lab);
    assert!(
        reasons[before..]
            .iter()
            .any(|m| m.contains("deleted while open")),
        "{reasons:?}"
    );

    // Write, keep open, delete, again: the deleted files' bytes stay counted while the call
    // may hold them, so the loop is refused once the quota is full.
    let out = op(&lab, &id, &format!("cycle|/data/c|{third}|10")).await;
    assert!(out.contains("err:StorageFull"), "{out}");
    let ok: usize = out
        .split(';')
        .find_map(|p| p.strip_suffix(" ok").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    assert!(ok <= 3, "{out}");
    assert!(disk_use(&files).0 <= q, "{:?}", disk_use(&files));
}

/// `fs::making_what_exists_is_not_charged_an_entry`, for plug-ins: with the entries used up,
/// `mkdir` of an existing folder answers `exist` and rewriting an existing file works; a new
/// entry is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_making_what_exists_is_not_charged_an_entry() {
    let lab = quota_lab();
    let id = lab.load_granted(WASI, mounts(&["/data"], &[]), &Grant::All);
    let files = files_dir(&lab, "default", ID);
    assert_eq!(op(&lab, &id, "mkdir|/data/d").await, "ok");
    assert_eq!(op(&lab, &id, "fill|/data/f|10").await, "ok");
    let mut i = 0;
    while op(&lab, &id, &format!("mkdir|/data/e{i}")).await == "ok" {
        i += 1;
        assert!(i <= 100, "the entries are not limited");
    }
    let denied = quota_denials(&lab).len();
    let out = op(&lab, &id, "mkdir|/data/d").await;
    assert!(out.starts_with("err:AlreadyExists"), "{out}");
    assert_eq!(op(&lab, &id, "fill|/data/f|20").await, "ok");
    assert_eq!(fs::read(files.join("data/f")).unwrap(), vec![b'x'; 20]);
    assert_eq!(quota_denials(&lab).len(), denied, "nothing new was refused");
    let out = op(&lab, &id, "mkdir|/data/new").await;
    assert!(out.starts_with("err:StorageFull"), "{out}");
    assert!(quota_denials(&lab).len() > denied);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_plug_in_calls_share_one_file_quota() {
    let lab = quota_lab();
    let id = lab.load_granted(WASI, mounts(&["/data"], &[]), &Grant::All);
    let files = files_dir(&lab, "default", ID);
    let size = QUOTA_BYTES * 2 / 5;
    let input = |i: usize| format!("fill|/data/p{i}|{size}");
    let (a, b, c, d) = (input(0), input(1), input(2), input(3));
    let outs = tokio::join!(
        op(&lab, &id, &a),
        op(&lab, &id, &b),
        op(&lab, &id, &c),
        op(&lab, &id, &d)
    );
    let outs = [outs.0, outs.1, outs.2, outs.3];
    let ok = outs.iter().filter(|o| *o == "ok").count();
    assert!(ok <= 2, "{outs:?}");
    assert!(
        outs.iter().all(|o| o == "ok" || o == "err:StorageFull:51"),
        "{outs:?}"
    );
    assert!(disk_use(&files).0 <= QUOTA_BYTES, "{:?}", disk_use(&files));
}

/// A plug-in, like a component, may hold only so many of the host's descriptors at once:
/// the open past the cap fails (`EMFILE`), is audited, and the next call opens again.
#[tokio::test(flavor = "multi_thread")]
async fn a_plug_in_cannot_hold_the_hosts_descriptors() {
    let lab = Lab::new();
    let id = lab.load_granted(
        WASI,
        mounts(&["/data"], &[]),
        &"filesystem".parse().unwrap(),
    );
    assert_eq!(op(&lab, &id, "write|/data/f|x").await, "ok");
    for path in ["/data/f", "/data"] {
        let before = fs_denials(&lab).len();
        let out = op(&lab, &id, &format!("hold-open|{path}|1000")).await;
        // EMFILE is 33 in WASI's numbering.
        let opened: usize = out
            .strip_prefix("err:Uncategorized:33:opened=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{path}: not refused: {out}"));
        assert!((240..256).contains(&opened), "{path}: {out}");
        let new: Vec<_> = fs_denials(&lab)[before..]
            .iter()
            .filter(|r| r.target() == Some("open files"))
            .cloned()
            .collect();
        assert_eq!(new.len(), 1, "{path}: {new:?}");
    }
    assert_eq!(op(&lab, &id, "hold-open|/data/f|200").await, "ok:200");
    assert_eq!(op(&lab, &id, "read|/data/f").await, "ok:x");
}
