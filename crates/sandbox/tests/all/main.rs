//! The sandbox's tests: hostile programs built here from C (`hostile.c`, one static binary,
//! the attack named by its first argument), each run once WITHOUT the sandbox (the attack
//! works on this machine) and once WITH it (the attack is stopped).
//!
//! The binary is linked statically (`cc -static`, glibc's static libraries are on the machine):
//! the sandbox's root holds only the bundle, so a dynamic binary would need its loader and
//! libraries granted too. Roles that need their own process (another environment, another
//! uid, a host that dies) re-run this test binary with `WARDEN_SANDBOX_TEST_ROLE` set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod lifecycle;
mod roles;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use warden_sandbox::{
    Access, Grant, Invocation, Limits, Outcome, Output, Profile, ProfileBuilder, Program, Sandbox,
};

/// Folder holding the compiled hostile binary: the bundle of every test.
pub fn bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(d) = std::env::var("WARDEN_SANDBOX_TEST_BUNDLE") {
            return PathBuf::from(d);
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-bundle");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/hostile.c");
        let tmp = dir.join(format!("hostile.{}", std::process::id()));
        let out = Command::new("cc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("running cc");
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        set_mode(&tmp, 0o755);
        std::fs::rename(&tmp, dir.join("hostile")).unwrap();
        dir
    })
}

pub fn hostile_path() -> PathBuf {
    bundle().join("hostile")
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A scratch folder the sandboxed program may write to when granted (owned by the ids the
/// program runs as).
pub fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    set_mode(d.path(), 0o755);
    if is_root() {
        let ids = warden_sandbox::DEFAULT_ROOT_HOST_IDS;
        std::os::unix::fs::chown(d.path(), Some(ids.uid()), Some(ids.gid())).unwrap();
    }
    d
}

/// A scratch folder like [`scratch`], on a file system with direct I/O (`O_DIRECT`): the
/// first of the target's temporary folder, the system's and `/var/tmp` where this process may
/// make one and open a file with `O_DIRECT` (tmpfs before Linux 6.6 refuses it).
pub fn disk_scratch() -> tempfile::TempDir {
    use std::os::unix::fs::OpenOptionsExt;
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
    ];
    let d = candidates
        .iter()
        .filter_map(|c| tempfile::tempdir_in(c).ok())
        .find(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(d.path().join("probe"))
                .is_ok()
                && std::fs::remove_file(d.path().join("probe")).is_ok()
        })
        .unwrap_or_else(|| panic!("no folder with direct I/O among {candidates:?}"));
    set_mode(d.path(), 0o755);
    if is_root() {
        let ids = warden_sandbox::DEFAULT_ROOT_HOST_IDS;
        std::os::unix::fs::chown(d.path(), Some(ids.uid()), Some(ids.gid())).unwrap();
    }
    d
}

pub fn profile() -> ProfileBuilder {
    Profile::builder(bundle())
}

pub fn sandbox(b: ProfileBuilder) -> Sandbox {
    Sandbox::new(b.build().unwrap()).unwrap()
}

pub fn with_rw(dir: &Path) -> ProfileBuilder {
    profile().grant(Grant::new(dir, "/data".parse().unwrap(), Access::ReadWrite))
}

pub fn invocation(args: &[&str]) -> Invocation {
    Invocation::new(Program::Binary("hostile".parse().unwrap())).args(args.iter().copied())
}

/// Runs the hostile program in `sb` (5 s deadline); returns the output and its RESULT line.
pub fn run_in(sb: &Sandbox, args: &[&str]) -> (Output, String) {
    let child = sb.spawn(&invocation(args)).unwrap();
    let out = child
        .run(b"", Instant::now() + Duration::from_secs(5), 1 << 20)
        .unwrap();
    let line = result_line(&out.stdout);
    (out, line)
}

/// Runs it without the sandbox (inherits this process's environment and descriptors, as a
/// naive host would).
pub fn run_plain(args: &[&str]) -> String {
    let mut c = Command::new(hostile_path())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            c.kill().unwrap();
            panic!("plain run of {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = c.wait_with_output().unwrap();
    result_line(&out.stdout)
}

pub fn result_line(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
        .unwrap_or_default()
}

/// The integer value of `key=` in a RESULT line.
pub fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key}= not a number in {line:?}"))
}

pub fn exited(out: &Output, code: i32) {
    assert_eq!(
        out.outcome,
        Outcome::Exited(warden_sandbox::Exit::Code(code)),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn limits() -> Limits {
    Limits::default()
}
