//! Tests that need a process of their own: this test binary re-run with
//! `WARDEN_SANDBOX_TEST_ROLE` set (and another environment, another uid, or a host that dies).

use std::process::Command;
use std::time::{Duration, Instant};

use warden_sandbox::{Limits, Outcome, Sandbox};

use crate::lifecycle::{assert_dead, wait_alive};
use crate::*;

const ROLE: &str = "WARDEN_SANDBOX_TEST_ROLE";
const DIR: &str = "WARDEN_SANDBOX_TEST_DIR";
const OK: &str = "ROLE-OK";

/// Runs `prefix... <this test binary> roles::role_entry` with the role set; returns stdout and
/// stderr after checking it succeeded.
fn reexec(prefix: &[&str], role: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut c = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    c.args([
        "--exact",
        "roles::role_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .env("WARDEN_SANDBOX_TEST_BUNDLE", bundle());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "role {role} failed:\n{text}");
    assert!(text.contains(OK), "role {role} did not finish:\n{text}");
    text
}

/// The entry point of the re-run roles; without `WARDEN_SANDBOX_TEST_ROLE` it has nothing to do
/// (the tests below start it with the role set).
#[test]
fn role_entry() {
    match std::env::var(ROLE).as_deref() {
        Ok("ld_preload") => ld_preload_role(),
        Ok("unprivileged") => unprivileged_role(),
        Ok("host_dies") => host_dies_role(),
        Ok("host_dies_frozen") => host_dies_frozen_role(),
        Ok("listener_lost") => listener_lost_role(),
        Ok("dumpable") => dumpable_role(),
        Ok("forked") => forked_role(),
        _ => return,
    }
    println!("{OK}");
}

/// Where children may not share the host's memory (Linux before 5.16, or
/// `WARDEN_SANDBOX_SPAWN=fork`), they are forked: the same sandbox, refusals and all.
#[test]
fn a_forked_child_gets_the_same_sandbox() {
    reexec(&[], "forked", &[("WARDEN_SANDBOX_SPAWN", "fork")]);
}

fn forked_role() {
    // And `warden inspect` says so.
    match &Sandbox::check().in_place {
        warden_sandbox::Feature::Missing(why) => {
            assert!(why.contains("WARDEN_SANDBOX_SPAWN=fork"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let sb = sandbox(profile());
    let child = sb.spawn(&invocation(&["id"])).unwrap();
    let out = child
        .run(b"", Instant::now() + Duration::from_secs(5), 1 << 16)
        .unwrap();
    let line = result_line(&out.stdout);
    assert_eq!(field(&line, "pid"), 1, "{line}");
    assert!(line.contains("host=warden"), "{line}");
    let mut child = sb.spawn(&invocation(&["ptrace", "1"])).unwrap();
    let outcome = child
        .wait_deadline(Instant::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(warden_sandbox::Exit::Code(0)));
    assert!(child.refused().iter().any(|r| r.call == "ptrace"));
    // A fork copies the memory: the host's own state is untouched by the child's setup.
    assert_eq!(
        rustix::process::dumpable_behavior().unwrap(),
        rustix::process::DumpableBehavior::Dumpable
    );
}

/// A child shares the host's memory until its `execve`, and the kernel's "dumpable" flag is
/// the memory's: its change of uid (a root host's) made the whole host not dumpable (review,
/// session 37). It is set back. In a process of its own: other tests' spawns would flip it.
#[test]
fn a_spawn_leaves_the_host_dumpable_as_it_was() {
    reexec(&[], "dumpable", &[]);
}

fn dumpable_role() {
    use rustix::process::{DumpableBehavior, dumpable_behavior};
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);
    let child = sandbox(profile()).spawn(&invocation(&["id"])).unwrap();
    let out = child
        .run(b"", Instant::now() + Duration::from_secs(5), 1 << 16)
        .unwrap();
    assert!(result_line(&out.stdout).starts_with("uid="), "{out:?}");
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);
}

#[test]
fn ld_preload_of_the_host_does_not_reach_the_program() {
    reexec(
        &[],
        "ld_preload",
        &[("LD_PRELOAD", "/nonexistent/warden-evil.so")],
    );
}

fn ld_preload_role() {
    assert!(std::env::var_os("LD_PRELOAD").is_some());
    let plain = run_plain(&["env"]);
    assert!(plain.contains("LD_PRELOAD="), "{plain}");
    let child = sandbox(profile())
        .spawn(&invocation(&["env"]).env("LANG", "C"))
        .unwrap();
    let out = child
        .run(b"", Instant::now() + Duration::from_secs(5), 1 << 16)
        .unwrap();
    assert_eq!(result_line(&out.stdout), "env=LANG=C;");
}

/// Red team (outside, round 2): a host at its own descriptor limit lost the seccomp listener
/// in transit (the kernel drops a descriptor it cannot install), and the program ran with
/// its refused calls answered by no one. In a process of its own: every descriptor of it is
/// taken.
#[test]
fn a_listener_lost_in_transit_starts_no_program() {
    reexec(&[], "listener_lost", &[]);
}

/// The spawning thread is left to block for the listener (`recvmsg`), then every free
/// descriptor is taken, so the kernel cannot give it: the spawn must fail and the program
/// never run. Whichever way each race goes, no program runs unsupervised.
fn listener_lost_role() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const RECVMSG: &str = "47 ";
    // Few descriptors, so that taking them all is quick.
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: Some(256),
        },
    )
    .unwrap();
    let data = scratch();
    let ran = data.path().join("ran");
    let sb = sandbox(with_rw(data.path()));
    let inv = invocation(&["create", "/data/ran"]);
    let spare = std::fs::File::open("/dev/null").unwrap();
    let (mut lost, mut supervised) = (0, 0);
    for _ in 0..20 {
        let me = rustix::thread::gettid().as_raw_nonzero();
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let filler = s.spawn(|| {
                let syscall = format!("/proc/self/task/{me}/syscall");
                let deadline = Instant::now() + Duration::from_secs(5);
                while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                    let blocked =
                        std::fs::read_to_string(&syscall).is_ok_and(|s| s.starts_with(RECVMSG));
                    if blocked {
                        let mut held = Vec::new();
                        while let Ok(fd) = rustix::io::dup(&spare) {
                            held.push(fd);
                        }
                        while !done.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        return held.len();
                    }
                    std::thread::yield_now();
                }
                0
            });
            let result = sb.spawn(&inv);
            done.store(true, Ordering::Release);
            (result, filler.join().unwrap())
        });
        match result {
            (Err(e), taken) => {
                assert!(taken > 0, "{e}");
                let text = format!("{e}");
                assert!(text.contains("seccomp"), "{text}");
                std::thread::sleep(Duration::from_millis(100));
                assert!(!ran.exists(), "the program ran: {text}");
                if text.contains("listener") {
                    lost += 1;
                }
            }
            (Ok(mut child), _) => {
                let out = child
                    .wait_deadline(Instant::now() + Duration::from_secs(5))
                    .unwrap();
                assert_eq!(out, Outcome::Exited(warden_sandbox::Exit::Code(0)));
                assert!(ran.exists());
                std::fs::remove_file(&ran).unwrap();
                supervised += 1;
            }
        }
    }
    println!("listener lost {lost} times, program supervised {supervised} times");
    assert!(
        lost > 0,
        "never lost: the test did not take the descriptors in time"
    );
}

/// The unprivileged path: as uid/gid 65534 with no groups (`setpriv`), or directly when the
/// tests already run unprivileged.
#[test]
fn unprivileged_host() {
    if !is_root() {
        unprivileged_role();
        return;
    }
    let text = reexec(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        "unprivileged",
        &[],
    );
    eprintln!("{text}");
}

fn unprivileged_role() {
    assert!(!is_root());
    let s = Sandbox::check();
    println!(
        "support as uid {}: {s:#?}",
        rustix::process::geteuid().as_raw()
    );
    assert!(s.namespaces.is_available(), "{s:?}");
    assert!(s.landlock.is_available(), "{s:?}");

    let (out, line) = run_in(&sandbox(profile()), &["id"]);
    exited(&out, 0);
    assert_eq!(field(&line, "uid"), 1000, "{line}");
    assert_eq!(field(&line, "pid"), 1, "{line}");

    let plain = run_plain(&["fork", "100"]);
    assert_eq!(field(&plain, "forks"), 100, "{plain}");
    let sb = sandbox(profile().limits(Limits {
        processes: 16,
        ..Limits::default()
    }));
    let (_, line) = run_in(&sb, &["fork", "100"]);
    assert!(field(&line, "forks") < 16, "{line}");
    crate::attacks::assert_process_counts_apart(&sb);
    crate::lifecycle::assert_run_anywhere_spreads_the_tree();

    let data = scratch();
    let outside = scratch();
    let outside = outside.path().join("x");
    let outside = outside.to_str().unwrap();
    let (_, line) = run_in(
        &sandbox(with_rw(data.path())),
        &["create", outside, "/bundle/x", "/data/ok"],
    );
    assert_eq!(field(&line, outside), 2, "{line}");
    assert_eq!(field(&line, "/bundle/x"), 30, "{line}");
    assert_eq!(field(&line, "/data/ok"), 0, "{line}");

    // Direct I/O: works unsandboxed, refused in the sandbox (the filters need no privilege).
    let disk = disk_scratch();
    let plain = run_plain(&["direct", disk.path().join("f").to_str().unwrap()]);
    assert_eq!(field(&plain, "openat_direct"), 1, "{plain}");
    crate::attacks::assert_direct_io_refused(&sandbox(with_rw(disk.path())));

    let (_, line) = run_in(&sandbox(profile()), &["read", "/proc/1/environ"]);
    assert_eq!(field(&line, "read"), -1, "{line}");
    let (_, line) = run_in(&sandbox(profile()), &["i386"]);
    assert!(line.is_empty(), "{line}");

    let sb = sandbox(with_rw(data.path()));
    let mut child = sb
        .spawn(&invocation(&["daemon", "/data/marker", "stay", "300"]))
        .unwrap();
    wait_alive(&data.path().join("marker"));
    let outcome = child
        .wait_deadline(Instant::now() + Duration::from_millis(50))
        .unwrap();
    assert_eq!(outcome, Outcome::TimedOut);
    assert_dead(&data.path().join("marker"));
}

#[test]
fn the_sandbox_dies_with_its_host() {
    let data = scratch();
    let text = reexec(&[], "host_dies", &[(DIR, data.path().to_str().unwrap())]);
    let pid: i32 = text
        .split("sandbox pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pid in {text}"))
        .parse()
        .unwrap();
    // The host (the re-run test binary) has exited without killing its child.
    assert_dead(&data.path().join("marker"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("zombie"),
        "sandbox pid {pid} survived its host"
    );
}

fn host_dies_role() {
    let dir = std::env::var(DIR).unwrap();
    let sb = sandbox(with_rw(std::path::Path::new(&dir)));
    let child = sb
        .spawn(&invocation(&["daemon", "/data/marker", "stay", "1000"]))
        .unwrap();
    wait_alive(&std::path::Path::new(&dir).join("marker"));
    println!("sandbox pid {}", child.id());
    println!("{OK}");
    // Die without dropping anything: only PR_SET_PDEATHSIG can end the sandbox now.
    std::process::exit(0);
}

/// A host that dies while its sandbox is frozen (a parked warm process): the sandbox dies too.
/// (With cgroup v1's freezer it would not: a frozen task ignores SIGKILL until thawed.)
#[test]
fn a_frozen_sandbox_dies_with_its_host() {
    let data = scratch();
    let text = reexec(
        &[],
        "host_dies_frozen",
        &[(DIR, data.path().to_str().unwrap())],
    );
    if text.contains("no freezer") {
        assert!(!is_root(), "a root host here has a freezer: {text}");
        return;
    }
    let procs = text
        .split("cgroup.procs ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cgroup in {text}"))
        .to_owned();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let left = std::fs::read_to_string(&procs).unwrap_or_default();
        if left.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "frozen sandbox processes survived their host: {left}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn host_dies_frozen_role() {
    let dir = std::env::var(DIR).unwrap();
    let sb = sandbox(with_rw(std::path::Path::new(&dir)));
    let mut child = sb
        .spawn(&invocation(&["daemon", "/data/marker", "stay", "1000"]))
        .unwrap();
    wait_alive(&std::path::Path::new(&dir).join("marker"));
    if !child.can_freeze() {
        println!("no freezer");
        println!("{OK}");
        std::process::exit(0);
    }
    child.freeze().unwrap();
    assert!(child.frozen(std::time::Duration::from_secs(2)));
    // Its freezing cgroup (v2: the one with cgroup.freeze), to watch from outside.
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4).unwrap())
        })
        .unwrap();
    println!("cgroup.procs {at}{path}/cgroup.procs");
    println!("{OK}");
    std::process::exit(0);
}
