//! What the running kernel offers, probed for real (`Sandbox::check`).
//!
//! Namespaces are probed by a dry run of the whole setup in a child (every namespace, the
//! mounts, `pivot_root`, the id maps, Landlock and seccomp) that exits where it would exec:
//! sysctls and LSM policies (Debian's `kernel.unprivileged_userns_clone`, Ubuntu's AppArmor
//! `kernel.apparmor_restrict_unprivileged_userns`, `user.max_user_namespaces`) all show up as a
//! failed step with its errno. Their values are recorded in [`Support::notes`] too.

use std::fmt;

/// A kernel feature: there, or missing and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    Available,
    Missing(String),
}

impl Feature {
    pub fn is_available(&self) -> bool {
        matches!(self, Feature::Available)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feature::Available => f.write_str("available"),
            Feature::Missing(why) => write!(f, "missing ({why})"),
        }
    }
}

/// The report. `landlock_abi` is 0 when Landlock is missing; TCP rules need ABI 4, scoping of
/// signals and abstract Unix sockets ABI 6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Support {
    /// User, mount, pid, ipc, uts, cgroup and net namespaces, usable by this process (the
    /// dry run succeeded).
    pub namespaces: Feature,
    pub landlock: Feature,
    pub landlock_abi: i32,
    pub seccomp: Feature,
    /// seccomp's user notifications: a program's refused system calls go to the host, which
    /// answers and audits them. Without them the kernel answers alone, and nothing is audited.
    pub seccomp_notify: Feature,
    /// A cgroup (v2, or v1's `pids` and `memory` hierarchies) this process may make children
    /// in: each sandbox then gets its own, with `pids.max` and a memory limit over the whole
    /// tree. Not required: without it `RLIMIT_NPROC` and `RLIMIT_AS` bound each process.
    pub cgroup: Feature,
    /// One cpu group for all of this host's sandboxes (v1's `cpu` hierarchy, or v2's `cpu`
    /// controller, where this process may use it): when the CPU is contended they weigh
    /// together as much as one group of the host's own, not each as much as the whole host.
    pub cpu_group: Feature,
    /// Host threads that guard a sandbox may run ahead of ordinary threads ([`crate::Urgent`]:
    /// `CAP_SYS_NICE` or `RLIMIT_RTPRIO`). Without it the file quota's watch competes with
    /// the host's other threads for the CPU, and a busy host reacts later to a fast writer.
    pub urgent: Feature,
    /// The host's own threads in a cpu cgroup of their own rather than in the root group's
    /// autogroup of their session ([`apart`]). There, other busy programs of the session are
    /// weighed with the host, against all sandboxes together, and the scheduler has left the
    /// sandboxes no CPU for hundreds of milliseconds at a time.
    pub apart: Feature,
    /// Sandboxes set up in the host's memory (`CLONE_VM | CLONE_VFORK`, Linux 5.16 and later)
    /// rather than forked, which copies the host's page tables and costs it about a third
    /// more CPU per fresh process call.
    pub in_place: Feature,
    /// Sysctls and other readings behind the answers above.
    pub notes: Vec<String>,
}

/// A feature the sandbox needs is missing and the profile does not accept doing without it.
#[derive(Debug, thiserror::Error)]
#[error("kernel feature missing: {feature}: {reason}")]
pub struct MissingFeature {
    pub feature: &'static str,
    pub reason: String,
}

const AUTOGROUP: &str = "/proc/sys/kernel/sched_autogroup_enabled";

/// Whether this process (its `/proc/self/cgroup`) is weighed apart from the other programs of
/// its session: it is not in the root cpu group (v1's `cpu` hierarchy, else v2), or the kernel
/// does not group sessions there (`autogroup`: the sysctl's text, `None` where it is absent).
fn apart(own: &str, autogroup: Option<&str>) -> Feature {
    let cpu = crate::cgroup::v1_path(own, "cpu").or_else(|| crate::cgroup::v2_path(own));
    let in_root = cpu.is_none_or(|p| p.trim() == "/");
    if in_root && autogroup.is_some_and(|a| a.trim() == "1") {
        Feature::Missing(
            "in the root cpu group, where the kernel groups sessions \
             (kernel.sched_autogroup_enabled = 1): other busy programs in this process's session \
             are weighed with it, against all sandboxes together; run warden in a cgroup of its \
             own (a systemd service)"
                .to_owned(),
        )
    } else {
        Feature::Available
    }
}

/// What sandboxes are without a cpu group of their own.
const AS_SESSIONS: &str = "each sandbox is a session of its own, and where the kernel groups \
                           sessions it weighs as much as the whole host";

impl Support {
    /// Everything but the namespaces, which the caller probes with a dry run of the setup
    /// (`spawn::probed`).
    pub(crate) fn kernel() -> Support {
        let mut notes = Vec::new();
        for f in [
            "/proc/sys/user/max_user_namespaces",
            "/proc/sys/kernel/unprivileged_userns_clone",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/yama/ptrace_scope",
        ] {
            let v = std::fs::read_to_string(f)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "absent".to_owned());
            notes.push(format!("{f} = {v}"));
        }
        let landlock_abi = crate::sys::landlock_abi();
        let landlock = if landlock_abi >= 1 {
            Feature::Available
        } else {
            Feature::Missing(format!(
                "landlock_create_ruleset(VERSION) failed: {}",
                std::io::Error::from_raw_os_error(-landlock_abi)
            ))
        };
        let seccomp = match crate::sys::seccomp_filter_available() {
            Ok(()) => Feature::Available,
            Err(e) => Feature::Missing(format!("seccomp filter mode: {e}")),
        };
        let seccomp_notify = match crate::sys::seccomp_notify_available() {
            Ok(()) => Feature::Available,
            Err(e) => Feature::Missing(format!("seccomp user notifications: {e}")),
        };
        let (root, cgroup_notes) = crate::cgroup::root();
        notes.extend(cgroup_notes.iter().cloned());
        let (cgroup, cpu_group) = match root {
            Ok(r) => {
                notes.push(format!("cgroups: {}", r.describe()));
                let cpu = if r.weighed() {
                    Feature::Available
                } else {
                    Feature::Missing(format!(
                        "no cpu controller this process may use: {AS_SESSIONS}"
                    ))
                };
                (Feature::Available, cpu)
            }
            Err(why) => (
                Feature::Missing(why.clone()),
                Feature::Missing(format!("no cgroup for sandboxes ({why}): {AS_SESSIONS}")),
            ),
        };
        let urgent = match crate::urgent::available() {
            Ok(()) => Feature::Available,
            Err(e) => Feature::Missing(format!(
                "SCHED_FIFO for a thread: {e} (needs CAP_SYS_NICE or RLIMIT_RTPRIO): the file \
                 quota's watch competes with the host's other threads for the CPU"
            )),
        };
        let apart = apart(
            &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            std::fs::read_to_string(AUTOGROUP).ok().as_deref(),
        );
        let in_place = match spawn_in_place() {
            Ok(()) => Feature::Available,
            Err(why) => Feature::Missing(format!(
                "{why}: sandboxes are forked, a copy of the host's page tables each"
            )),
        };
        Support {
            namespaces: Feature::Missing("not probed".to_owned()),
            landlock,
            landlock_abi: landlock_abi.max(0),
            seccomp,
            seccomp_notify,
            cgroup,
            cpu_group,
            urgent,
            apart,
            in_place,
            notes,
        }
    }

    /// Checks the features a profile needs: namespaces and seccomp always, Landlock unless
    /// the profile accepts [`Weakening::NoLandlock`](crate::Weakening::NoLandlock).
    pub fn require(&self, accept_no_landlock: bool) -> Result<(), MissingFeature> {
        let need = |feature, f: &Feature| match f {
            Feature::Available => Ok(()),
            Feature::Missing(reason) => Err(MissingFeature {
                feature,
                reason: reason.clone(),
            }),
        };
        need("namespaces", &self.namespaces)?;
        need("seccomp", &self.seccomp)?;
        if !accept_no_landlock {
            need("landlock", &self.landlock)?;
        }
        Ok(())
    }
}

/// Whether sandboxes may be set up in the host's memory (`crate::sys::vfork_into`): Linux
/// 5.16 or later (before, a child that dumped core there took the host with it), and not
/// `WARDEN_SANDBOX_SPAWN=fork`; or why not.
pub(crate) fn spawn_in_place() -> Result<(), String> {
    if std::env::var_os("WARDEN_SANDBOX_SPAWN").is_some_and(|v| v == "fork") {
        return Err("WARDEN_SANDBOX_SPAWN=fork".to_owned());
    }
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    if kernel_at_least(&release, (5, 16)) {
        Ok(())
    } else {
        Err(format!(
            "Linux {release}, before 5.16, where a child that dumped core in the host's memory \
             would take the host with it"
        ))
    }
}

/// Whether a kernel release (`6.18.0-1-amd64`) is `want` or later.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_share_the_hosts_memory_only_from_linux_5_16() {
        for (release, newer) in [
            ("6.18.0-1-amd64", true),
            ("5.16.0", true),
            ("5.15.0-91-generic", false),
            ("4.19.0", false),
            ("10.0", true),
            ("garbage", false),
        ] {
            assert_eq!(kernel_at_least(release, (5, 16)), newer, "{release}");
        }
    }

    #[test]
    fn the_host_is_apart_unless_in_the_root_cpu_group_with_autogroups() {
        let v1_root = "9:name=systemd:/\n4:memory:/x\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let v1_own = "4:memory:/x\n1:cpu,cpuacct:/system.slice/warden.service\n0::/\n";
        let v2_root = "0::/\n";
        let v2_own = "0::/system.slice/warden.service\n";
        let missing =
            |f: Feature| matches!(f, Feature::Missing(why) if why.contains("root cpu group"));
        assert!(missing(apart(v1_root, Some("1\n"))));
        assert!(missing(apart(v2_root, Some("1\n"))));
        // v1's cpu hierarchy decides, not the v2 line beside it.
        assert_eq!(apart(v1_own, Some("1\n")), Feature::Available);
        assert_eq!(apart(v2_own, Some("1\n")), Feature::Available);
        // No autogroups (off, or a kernel without them).
        assert_eq!(apart(v1_root, Some("0\n")), Feature::Available);
        assert_eq!(apart(v2_root, None), Feature::Available);
        // Nothing readable: the root, as a process outside any cgroup is.
        assert!(missing(apart("", Some("1"))));
    }
}
