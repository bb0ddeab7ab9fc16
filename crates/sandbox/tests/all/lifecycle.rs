//! The process tree ends with the call: timeouts, kills, drops, daemonized grandchildren.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use warden_sandbox::Outcome;

use crate::*;

/// The marker's content, sampled twice `gap` apart: `Some(changed)` once it exists.
pub fn marker_changes(path: &Path, gap: Duration) -> Option<bool> {
    let a = std::fs::read_to_string(path).ok()?;
    std::thread::sleep(gap);
    let b = std::fs::read_to_string(path).ok()?;
    Some(a != b)
}

/// Waits (up to 2 s) until the marker exists and changes: the grandchild is alive.
pub fn wait_alive(path: &Path) {
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if marker_changes(path, Duration::from_millis(50)) == Some(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the grandchild never wrote {}", path.display());
}

pub fn assert_dead(path: &Path) {
    // The kernel takes a moment to kill a namespace (longer on a loaded machine): wait up to
    // 3 s for the marker to stop, then three samples 100 ms apart (ten ticks each): unchanged.
    let end = Instant::now() + Duration::from_secs(3);
    while marker_changes(path, Duration::from_millis(100)) == Some(true) && Instant::now() < end {}
    for _ in 0..3 {
        assert_eq!(
            marker_changes(path, Duration::from_millis(100)),
            Some(false),
            "{} still changes",
            path.display()
        );
    }
}

#[test]
fn a_program_that_never_exits_is_killed_at_the_deadline() {
    let mut plain = Command::new(hostile_path()).arg("sleep").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(plain.try_wait().unwrap().is_none(), "it really sleeps");
    plain.kill().unwrap();
    plain.wait().unwrap();

    let t = Instant::now();
    let mut child = sandbox(profile()).spawn(&invocation(&["sleep"])).unwrap();
    let outcome = child
        .wait_deadline(Instant::now() + Duration::from_millis(300))
        .unwrap();
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Reaped: the pid is gone.
    assert!(!Path::new(&format!("/proc/{}", child.id())).exists());
}

#[test]
fn a_daemonized_grandchild_dies_with_the_program() {
    // Without the sandbox it outlives its parent.
    let host = tempfile::tempdir().unwrap();
    let marker = host.path().join("marker");
    let plain = run_plain(&["daemon", marker.to_str().unwrap(), "exit", "60"]);
    assert_eq!(plain, "daemon=started");
    // The plain grandchild outlives the program (seen within 2 s: a loaded machine may be slow
    // to schedule it).
    wait_alive(&marker);
    std::thread::sleep(Duration::from_millis(600)); // it ends by itself (60 ticks)

    // With it, the program exiting kills its namespace.
    let data = scratch();
    let sb = sandbox(with_rw(data.path()));
    let (out, line) = run_in(&sb, &["daemon", "/data/marker", "exit", "300"]);
    exited(&out, 0);
    assert_eq!(line, "daemon=started");
    assert!(data.path().join("marker").exists(), "the grandchild ran");
    assert_dead(&data.path().join("marker"));
}

#[test]
fn kill_and_timeout_and_drop_end_the_whole_tree() {
    let data = scratch();
    let sb = sandbox(with_rw(data.path()));
    let marker = data.path().join("marker");

    // Timeout.
    let mut child = sb
        .spawn(&invocation(&["daemon", "/data/marker", "stay", "300"]))
        .unwrap();
    wait_alive(&marker);
    let outcome = child
        .wait_deadline(Instant::now() + Duration::from_millis(50))
        .unwrap();
    assert_eq!(outcome, Outcome::TimedOut);
    assert_dead(&marker);

    // Drop.
    std::fs::remove_file(&marker).unwrap();
    let child = sb
        .spawn(&invocation(&["daemon", "/data/marker", "stay", "300"]))
        .unwrap();
    wait_alive(&marker);
    drop(child);
    assert_dead(&marker);
}

#[test]
fn a_script_runs_with_a_granted_interpreter() {
    use warden_sandbox::{Access, Grant, Invocation, Profile, Program};
    let bundle = tempfile::tempdir().unwrap();
    set_mode(bundle.path(), 0o755);
    let script = bundle.path().join("hello.sh");
    std::fs::write(
        &script,
        "echo \"hello from $0 as $(id -u 2>/dev/null || echo ?)\"\n",
    )
    .unwrap();
    set_mode(&script, 0o644);
    // The interpreter and its libraries come from the host, granted read-exec.
    let mut b = Profile::builder(bundle.path());
    for dir in ["/usr", "/lib64", "/lib"] {
        if Path::new(dir).exists() {
            b = b.grant(Grant::new(dir, dir.parse().unwrap(), Access::ReadExec));
        }
    }
    let sb = sandbox(b);
    let inv = Invocation::new(Program::Script {
        interpreter: "/usr/bin/sh".parse().unwrap(),
        script: "hello.sh".parse().unwrap(),
    });
    let out = sb
        .spawn(&inv)
        .unwrap()
        .run(b"", Instant::now() + Duration::from_secs(5), 4096)
        .unwrap();
    assert_eq!(
        out.outcome,
        Outcome::Exited(warden_sandbox::Exit::Code(0)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("hello from /bundle/hello.sh"),
        "{out:?}"
    );
}

/// CPU ticks of the program's children (the spinner), from the host's /proc.
fn children_ticks(c: &warden_sandbox::Child) -> u64 {
    let kids =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", c.id())).unwrap_or_default();
    kids.split_whitespace()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
        })
        .sum()
}

/// The freezer held apart from the child (as a measure on another thread holds it while the
/// child is in use) stops the whole tree, says whether it did, and thaws it; once the program
/// has exited there is none.
#[test]
fn a_freezer_apart_from_the_child_holds_the_tree_still() {
    let sb = sandbox(profile());
    let mut child = sb.spawn(&invocation(&["spin"])).unwrap();
    let Some(freezer) = child.freezer() else {
        assert!(!is_root(), "a root host here has a freezer");
        return;
    };
    let ticks = children_ticks;
    std::thread::sleep(Duration::from_millis(200));
    let other = std::thread::spawn({
        let f = freezer.clone();
        move || f.freeze(Duration::from_secs(1)).unwrap()
    });
    assert!(other.join().unwrap(), "the tree did not freeze");
    assert!(child.frozen(Duration::ZERO));
    let at = ticks(&child);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks(&child), at, "a frozen child ran");
    freezer.thaw().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(ticks(&child), at, "the thawed child should spin again");
    child.kill().unwrap();
    child
        .wait_deadline(Instant::now() + Duration::from_secs(2))
        .unwrap();
    assert!(
        child.freezer().is_none(),
        "an exited program has no freezer"
    );
}

/// A frozen sandbox runs nothing (a spinning child, a program that sends itself SIGCONT),
/// thaws on request, and a kill while frozen still ends it at once.
#[test]
fn a_frozen_sandbox_runs_nothing_until_thawed() {
    let sb = sandbox(profile());
    let mut child = sb.spawn(&invocation(&["spin"])).unwrap();
    if !child.can_freeze() {
        assert!(!is_root(), "a root host here has a freezer");
        return;
    }
    let cpu = children_ticks;
    std::thread::sleep(Duration::from_millis(200));
    let spinning_before = cpu(&child);
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        cpu(&child),
        spinning_before,
        "the child should spin while not frozen"
    );
    child.freeze().unwrap();
    assert!(child.frozen(Duration::from_secs(1)));
    let frozen_at = cpu(&child);
    child.resume().unwrap(); // SIGCONT does not thaw
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu(&child), frozen_at, "a frozen child ran");
    assert!(child.frozen(Duration::ZERO));
    child.thaw().unwrap();
    assert!(!child.frozen(Duration::from_millis(50)));
    child.freeze().unwrap();
    assert!(child.frozen(Duration::from_secs(1)));
    let started = Instant::now();
    child.kill().unwrap();
    assert_eq!(
        child
            .wait_deadline(Instant::now() + Duration::from_secs(2))
            .unwrap(),
        Outcome::Exited(warden_sandbox::Exit::Signal(9))
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn run_here_moves_the_program_to_the_callers_cpu() {
    let sb = sandbox(profile());
    let mut child = sb.spawn(&invocation(&["sleep"])).unwrap();
    let allowed = |c: &warden_sandbox::Child| -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string()
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for cpu in 0..cores {
        // This thread on one CPU, then the program follows it there.
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        rustix::thread::sched_setaffinity(None, &one).unwrap();
        child.run_here().unwrap();
        assert_eq!(allowed(&child), cpu.to_string());
    }
    child.kill().unwrap();
}

/// The CPUs each process of the sandbox under `pid` (and its threads) may run on.
fn tree_cpus(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for task in std::fs::read_dir(format!("/proc/{p}/task")).unwrap() {
            let tid = task.unwrap().file_name().into_string().unwrap();
            let status = std::fs::read_to_string(format!("/proc/{p}/task/{tid}/status")).unwrap();
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_string();
            out.push((tid.parse().unwrap(), cpus));
            let kids = std::fs::read_to_string(format!("/proc/{p}/task/{tid}/children")).unwrap();
            todo.extend(kids.split_whitespace().map(|k| k.parse::<u32>().unwrap()));
        }
    }
    out
}

#[test]
fn run_anywhere_lets_the_whole_tree_use_every_cpu_again() {
    assert_run_anywhere_spreads_the_tree();
}

/// Also run unprivileged (`roles::unprivileged_host`), where the sandbox may have no cgroup
/// and its tree is found through `/proc`.
pub(crate) fn assert_run_anywhere_spreads_the_tree() {
    let sb = sandbox(profile());
    let everywhere = tree_cpus(std::process::id())[0].1.clone();
    let mut child = sb.spawn(&invocation(&["hold", "3"])).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut tree = tree_cpus(child.id());
    while tree.len() < 4 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        tree = tree_cpus(child.id());
    }
    assert_eq!(tree.len(), 4, "{tree:?}");
    // The program moved to this thread's CPU, and its children with it, as children forked
    // after `run_here` are (they inherit the set).
    child.run_here().unwrap();
    let cpu = tree_cpus(child.id())[0].1.clone();
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu.parse().unwrap());
    for (tid, _) in &tree {
        let pid = rustix::process::Pid::from_raw(*tid as i32).unwrap();
        rustix::thread::sched_setaffinity(Some(pid), &one).unwrap();
    }
    assert!(tree_cpus(child.id()).iter().all(|(_, c)| *c == cpu));
    assert!(child.waited().is_some());
    // The host lets the whole tree go.
    child.run_anywhere().unwrap();
    let tree = tree_cpus(child.id());
    assert_eq!(tree.len(), 4, "{tree:?}");
    assert!(
        tree.iter().all(|(_, c)| *c == everywhere),
        "{tree:?} not on {everywhere}"
    );
    child.kill().unwrap();
}
