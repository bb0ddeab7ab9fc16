//! The file quota across processes (issue 9, finding 1): parallel `warden run`s of one
//! extension on one data dir draw from one budget, so together they never hold more than
//! `[policy.files] max_bytes` on disk, and the refusals are audited.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

use crate::foundation::{keygen, pack, sign, stderr, stdout, trust_file};

const MAX_BYTES: u64 = 4 << 20;
const PROCESSES: usize = 4;

/// Copies the regular files and folders under `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The hostile-fs fixture with a read-write `/data` mount, packed and signed; a trust bundle
/// for it; and a policy with a 4 MiB file quota.
struct Setup {
    t: TempDir,
    trust: PathBuf,
    bundle: PathBuf,
    policy: PathBuf,
}

fn setup() -> Setup {
    let t = TempDir::new().unwrap();
    let p = keygen(t.path(), "warden-examples");
    let trust = trust_file(
        t.path(),
        "trust.toml",
        &[("warden-examples", &[&p.pem], &[])],
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests/hostile-fs");
    assert!(
        src.join("extension.wasm").exists(),
        "run scripts/build-examples.sh first"
    );
    let stage = t.path().join("hostile-fs");
    fs::create_dir_all(&stage).unwrap();
    let manifest = fs::read_to_string(src.join("extension.toml")).unwrap()
        + "\n[permissions.filesystem]\npaths = [\"/data\"]\n";
    fs::write(stage.join("extension.toml"), manifest).unwrap();
    fs::copy(src.join("extension.wasm"), stage.join("extension.wasm")).unwrap();
    if src.join("assets").is_dir() {
        copy_tree(&src.join("assets"), &stage.join("assets"));
    }
    let bundle = t.path().join("hostile-fs.wext");
    pack(&stage, &bundle);
    sign(&bundle, &p.key);
    let policy = t.path().join("policy.toml");
    fs::write(&policy, "[policy.files]\nmax_bytes = \"4MiB\"\n").unwrap();
    Setup {
        t,
        trust,
        bundle,
        policy,
    }
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.t.path().join("data")
    }

    /// The install's folder holding all its data mounts.
    fn files(&self) -> PathBuf {
        self.data()
            .join("tenants/default/extensions/warden.hostile-fs/files")
    }

    /// Starts `warden run ... --call METHOD --input INPUT` without waiting for it.
    fn spawn(&self, method: &str, input: &str) -> std::process::Child {
        let policy = self.policy.to_string_lossy();
        crate::foundation::spawn_run(
            &self.bundle,
            &self.trust,
            &self.data(),
            &[
                "--config", &policy, "--grant", "fs:/data", "--call", method, "--input", input,
            ],
        )
    }

    /// Runs every (method, input) at once, each in its own `warden run`; their guest outputs.
    fn parallel(&self, runs: &[(&str, String)]) -> Vec<String> {
        let children: Vec<_> = runs.iter().map(|(m, i)| self.spawn(m, i)).collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        outs.iter()
            .zip(runs)
            .map(|(o, (m, i))| {
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{m} {i}: the call itself failed\nstdout:\n{}\nstderr:\n{}",
                    stdout(o),
                    stderr(o)
                );
                stdout(o).trim().to_string()
            })
            .collect()
    }
}

/// What `root` holds on disk, counted as the quota counts it: per entry the larger of its
/// length and its allocated blocks.
fn disk_use(root: &Path) -> u64 {
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            bytes += m.len().max(m.blocks() * 512);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    bytes
}

/// A refusal for lack of space, as the guest sees it: `insufficient-space` from raw WASI,
/// `StorageFull` (ENOSPC) from a std descriptor call, `Uncategorized` (EIO: wasi-libc's answer
/// to any failed stream write) from `std::fs::write`.
fn no_space(out: &str) -> bool {
    matches!(
        out,
        "err:StorageFull:51" | "err:insufficient-space" | "err:Uncategorized:29"
    )
}

#[test]
fn parallel_runs_on_one_data_dir_share_one_file_quota() {
    let s = setup();
    // Four processes at once, each trying to write 6 MiB (every route a file grows by:
    // `std::fs::write`, append, a write stream, an append stream): 24 MiB asked of a 4 MiB
    // budget. Per-process budgets let each write its own 4 MiB.
    let six = 6 << 20;
    let wave = [
        ("fill", format!("/data/p0|{six}")),
        ("append-fill", format!("/data/p1|{six}")),
        ("stream-fill", format!("/data|p2|{six}|write")),
        ("stream-fill", format!("/data|p3|{six}|append")),
    ];
    assert_eq!(wave.len(), PROCESSES);
    let outs = s.parallel(&wave);
    let after_first = disk_use(&s.files());
    // Then several 1 MiB files each, again at once.
    let mut outs2 = Vec::new();
    for round in 0..2 {
        let wave: Vec<(&str, String)> = (0..PROCESSES)
            .map(|i| ("fill", format!("/data/q{round}-{i}|{}", 1 << 20)))
            .collect();
        outs2.extend(s.parallel(&wave));
    }
    let bytes = disk_use(&s.files());
    eprintln!(
        "{PROCESSES} parallel runs wrote {after_first} bytes, {bytes} after two more waves \
         (max_bytes = {MAX_BYTES}); outputs {outs:?} {outs2:?}"
    );
    assert!(
        bytes <= MAX_BYTES,
        "{bytes} bytes on disk, over max_bytes = {MAX_BYTES} (first wave: {after_first})"
    );
    // Each asked for more than the whole quota: each was refused, as on a full disk, and the
    // raw WASI routes name the refusal exactly.
    for (o, (m, i)) in outs.iter().zip(&wave) {
        assert!(no_space(o), "{m} {i}: {o}");
    }
    assert!(
        outs.iter().any(|o| o == "err:insufficient-space"),
        "{outs:?}"
    );
    for o in outs2.iter().filter(|o| *o != "ok") {
        assert!(no_space(o), "{o}");
    }
    // The budget was used, not refused wholesale.
    assert!(bytes >= MAX_BYTES / 2, "{bytes}");

    // Every refusal is an audited `filesystem` denial naming the quota and its limit.
    let log = fs::read_to_string(s.data().join("audit/audit.jsonl")).unwrap();
    let denials: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .filter(|r| {
            r["event"] == "denial"
                && r["capability"] == "filesystem"
                && r["target"] == "quota /data"
        })
        .collect();
    assert!(denials.len() >= PROCESSES, "{denials:?}");
    for d in &denials {
        let m = d["message"].as_str().unwrap_or_default();
        assert!(m.contains("max_bytes = 4194304"), "{m}");
    }
    // The budget's own files live beside the mounts' folder, never inside it.
    assert!(
        fs::read_dir(s.files())
            .unwrap()
            .all(|e| e.unwrap().file_name() == "data"),
        "only the /data mount's folder is inside files/"
    );
}
