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
    /// A cgroup v2 folder this process may create children in, with the `pids` and `memory`
    /// controllers. Reported only: this version does not place programs in a cgroup yet.
    pub cgroup: Feature,
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
        let cgroup = cgroup_v2(&mut notes);
        Support {
            namespaces: Feature::Missing("not probed".to_owned()),
            landlock,
            landlock_abi: landlock_abi.max(0),
            seccomp,
            cgroup,
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

/// Finds this process's cgroup v2 folder and whether it could hold a child with the pids and
/// memory controllers.
fn cgroup_v2(notes: &mut Vec<String>) -> Feature {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next()? == "cgroup2")
            .then(|| left.split(' ').nth(4).map(str::to_owned))?
    }) else {
        return Feature::Missing("no cgroup2 file system is mounted".to_owned());
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(rel) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Feature::Missing("this process has no cgroup v2 path".to_owned());
    };
    let dir = format!("{mount}{}", rel.trim_end_matches('/'));
    notes.push(format!("cgroup v2: {dir}"));
    let controllers =
        std::fs::read_to_string(format!("{dir}/cgroup.controllers")).unwrap_or_default();
    let have: Vec<&str> = controllers.split_whitespace().collect();
    let lacking: Vec<&str> = ["pids", "memory"]
        .into_iter()
        .filter(|c| !have.contains(c))
        .collect();
    if !lacking.is_empty() {
        return Feature::Missing(format!(
            "cgroup v2 at {dir} offers [{}], lacks [{}] (controllers bound to cgroup v1, or not delegated)",
            have.join(" "),
            lacking.join(" ")
        ));
    }
    if rustix::fs::access(dir.as_str(), rustix::fs::Access::WRITE_OK).is_err() {
        return Feature::Missing(format!(
            "cgroup v2 at {dir} is not writable (not delegated)"
        ));
    }
    Feature::Available
}
