//! What a sandbox is made of, parsed once at the edge: the bundle, the granted folders, the
//! private `/tmp`, the rlimits and the host identity the program runs as.
//!
//! Defaults (every one named): no grant (the program sees only `/bundle`, `/dev/null`,
//! `/dev/urandom` and `/tmp`), [`DEFAULT_TMP_SIZE`], [`Limits::default`], Landlock required.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the bundle is mounted, read-only, in the program's view.
pub const BUNDLE_AT: &str = "/bundle";
/// The private tmpfs.
pub const TMP_AT: &str = "/tmp";
/// Sandbox paths a grant may not take (the fixed parts of the root, and `/proc`, which is never
/// mounted so that nothing about the host's processes is visible).
pub(crate) const RESERVED: &[&str] = &[BUNDLE_AT, TMP_AT, "/dev", "/proc", "/sys", "/oldroot"];

/// Default size cap of the private `/tmp` (tmpfs `size=`): enough for scratch files, small
/// enough that a full `/tmp` is not a host memory problem.
pub const DEFAULT_TMP_SIZE: u64 = 16 << 20;
/// Largest `/tmp` a profile may ask for.
pub const MAX_TMP_SIZE: u64 = 1 << 30;
/// Inode cap of the private `/tmp` (tmpfs `nr_inodes=`): a flood of empty files costs memory too.
pub const TMP_INODES: u64 = 4096;
/// The longest sandbox or bundle path accepted.
pub const MAX_PATH_LEN: usize = 1024;
/// The most grants one profile may have.
pub const MAX_GRANTS: usize = 32;

/// The uid and gid the program has inside its user namespace. Not 0, so that `execve` gives
/// the program no capabilities even in its own namespace.
pub const SANDBOX_UID: u32 = 1000;
/// See [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;
/// The host uid/gid a root host runs programs as unless told otherwise (`nobody`).
pub const DEFAULT_ROOT_HOST_IDS: HostIds = HostIds {
    uid: 65534,
    gid: 65534,
};

/// A bad profile, found when it is built (never at spawn time).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{what} {path:?}: {reason}")]
    BadPath {
        what: &'static str,
        path: String,
        reason: &'static str,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("grant at {at}: the host folder {path} is on a read-only mount")]
    ReadOnlySource { at: String, path: PathBuf },
    #[error("grants at {0} and {1} overlap (one is inside the other)")]
    Overlap(String, String),
    #[error("more than {MAX_GRANTS} grants")]
    TooManyGrants,
    #[error("limit {name} = {value}: {reason}")]
    BadLimit {
        name: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("host ids {uid}:{gid}: {reason}")]
    BadHostIds {
        uid: u32,
        gid: u32,
        reason: &'static str,
    },
}

fn bad(what: &'static str, path: &str, reason: &'static str) -> ProfileError {
    ProfileError::BadPath {
        what,
        path: path.chars().take(MAX_PATH_LEN).collect(),
        reason,
    }
}

/// One path component: `[A-Za-z0-9._-]+`, not `.` or `..`.
fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty component (`//` or a trailing `/`)");
    }
    if c == "." || c == ".." {
        return Err("`.` and `..` are not allowed");
    }
    if !c
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only ASCII letters, digits, `.`, `_` and `-` are allowed in a component");
    }
    Ok(())
}

/// An absolute path inside the sandbox where a grant is mounted: normalized, plain components,
/// not `/` and not `/bundle`, `/tmp`, `/dev`, `/proc`, `/sys` or under them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SandboxPath(String);

impl FromStr for SandboxPath {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        const WHAT: &str = "sandbox path";
        if s.len() > MAX_PATH_LEN {
            return Err(bad(WHAT, s, "too long"));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(bad(WHAT, s, "must be absolute"));
        };
        if rest.is_empty() {
            return Err(bad(WHAT, s, "`/` itself cannot be granted"));
        }
        for c in rest.split('/') {
            check_component(c).map_err(|r| bad(WHAT, s, r))?;
        }
        if RESERVED
            .iter()
            .any(|r| s == *r || s.starts_with(&format!("{r}/")))
        {
            return Err(bad(WHAT, s, "reserved (/bundle, /tmp, /dev, /proc, /sys)"));
        }
        Ok(SandboxPath(s.to_owned()))
    }
}

impl SandboxPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn contains(&self, other: &SandboxPath) -> bool {
        other.0 == self.0 || other.0.starts_with(&format!("{}/", self.0))
    }
}

impl fmt::Display for SandboxPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative path inside the bundle (the entry executable or a script): plain components only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BundlePath(String);

impl FromStr for BundlePath {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        const WHAT: &str = "bundle path";
        if s.len() > MAX_PATH_LEN {
            return Err(bad(WHAT, s, "too long"));
        }
        if s.starts_with('/') {
            return Err(bad(WHAT, s, "must be relative to the bundle"));
        }
        for c in s.split('/') {
            check_component(c).map_err(|r| bad(WHAT, s, r))?;
        }
        Ok(BundlePath(s.to_owned()))
    }
}

impl BundlePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The path the program sees: `/bundle/<path>`.
    pub fn in_sandbox(&self) -> String {
        format!("{BUNDLE_AT}/{}", self.0)
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a granted folder is mounted. Every grant is `nosuid,nodev`; only [`Access::ReadExec`]
/// lets the program execute files from it (mount without `noexec`, Landlock `Execute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read files and list folders.
    ReadOnly,
    /// Also create, write, rename, remove, truncate (never device nodes, never execute).
    ReadWrite,
    /// Read and execute: an interpreter's folder, for example.
    ReadExec,
}

/// A host folder made visible at `at` in the sandbox.
#[derive(Clone, Debug)]
pub struct Grant {
    pub(crate) host: PathBuf,
    pub(crate) at: SandboxPath,
    pub(crate) access: Access,
}

impl Grant {
    pub fn new(host: impl Into<PathBuf>, at: SandboxPath, access: Access) -> Grant {
        Grant {
            host: host.into(),
            at,
            access,
        }
    }
    pub fn host(&self) -> &Path {
        &self.host
    }
    pub fn at(&self) -> &SandboxPath {
        &self.at
    }
    pub fn access(&self) -> Access {
        self.access
    }
}

/// Resource limits of the program and everything it starts (`setrlimit` before `execve`;
/// `RLIMIT_CORE` is always 0). Defaults are [`Limits::default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes of address space per process. Default 512 MiB.
    pub address_space: u64,
    /// `RLIMIT_CPU`, CPU seconds per process (SIGXCPU, then SIGKILL). Default 30.
    pub cpu_seconds: u64,
    /// `RLIMIT_NOFILE`, open file descriptors per process. Default 64.
    pub open_files: u64,
    /// `RLIMIT_NPROC`, processes of the sandbox's uid in its own user namespace. Default 32.
    pub processes: u64,
    /// `RLIMIT_FSIZE`, the largest file the program may write (SIGXFSZ / `EFBIG`). Default 64 MiB.
    pub file_size: u64,
    /// Memory of the whole sandbox (every process, its `/tmp` and the kernel's buffers for it),
    /// where it gets a cgroup ([`Support::cgroup`](crate::Support::cgroup)); over it the
    /// kernel kills a process of the tree. Default 512 MiB.
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            address_space: 512 << 20,
            cpu_seconds: 30,
            open_files: 64,
            processes: 32,
            file_size: 64 << 20,
            memory: 512 << 20,
        }
    }
}

impl Limits {
    fn check(&self) -> Result<(), ProfileError> {
        let min = |name, value: u64, min: u64, reason| {
            if value < min {
                Err(ProfileError::BadLimit {
                    name,
                    value,
                    reason,
                })
            } else {
                Ok(())
            }
        };
        min(
            "address_space",
            self.address_space,
            8 << 20,
            "below 8 MiB nothing starts",
        )?;
        min("memory", self.memory, 8 << 20, "below 8 MiB nothing starts")?;
        min("cpu_seconds", self.cpu_seconds, 1, "must be at least 1")?;
        min(
            "open_files",
            self.open_files,
            4,
            "stdin, stdout and stderr need 3",
        )?;
        min("processes", self.processes, 1, "must be at least 1")?;
        Ok(())
    }
}

/// A host uid and gid other than root's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIds {
    uid: u32,
    gid: u32,
}

impl HostIds {
    /// Refuses uid or gid 0: the program would be the host's root user, to which the kernel does
    /// not apply `RLIMIT_NPROC`.
    pub fn new(uid: u32, gid: u32) -> Result<HostIds, ProfileError> {
        if uid == 0 || gid == 0 {
            return Err(ProfileError::BadHostIds {
                uid,
                gid,
                reason: "root cannot be the sandbox's host identity",
            });
        }
        Ok(HostIds { uid, gid })
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
}

/// How the program's ids are mapped to the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMapping {
    /// The host is unprivileged: the program runs as the host's own uid/gid (the only mapping
    /// an unprivileged user may write), with `setgroups` denied in the namespace.
    Unprivileged { uid: u32, gid: u32 },
    /// The host is root: the sandbox's setup runs as root of the namespace (mapped to host
    /// root, needed to read the sources and to create its tmpfs files), then the program drops
    /// to [`SANDBOX_UID`], mapped to `program`, with no supplementary groups.
    FromRoot { program: HostIds },
}

impl IdMapping {
    /// The host uid and gid the program runs as.
    pub fn program_ids(&self) -> (u32, u32) {
        match *self {
            IdMapping::Unprivileged { uid, gid } => (uid, gid),
            IdMapping::FromRoot { program } => (program.uid, program.gid),
        }
    }
}

/// A kernel feature a profile may do without, when the operator says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Weakening {
    /// Run without Landlock when the kernel has none (mounts and seccomp still apply).
    NoLandlock,
}

/// A checked profile. Built with [`Profile::builder`].
#[derive(Clone, Debug)]
pub struct Profile {
    pub(crate) bundle: PathBuf,
    pub(crate) grants: Vec<ResolvedGrant>,
    pub(crate) tmp_size: u64,
    pub(crate) limits: Limits,
    pub(crate) ids: IdMapping,
    pub(crate) weakenings: Vec<Weakening>,
}

/// A grant whose host folder was canonicalized and inspected at build time.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedGrant {
    pub(crate) host: PathBuf,
    pub(crate) at: SandboxPath,
    pub(crate) access: Access,
    /// Flags of the mount the folder is on, which a bind remount inside a user namespace must
    /// keep (`nosuid`, `nodev`, `noexec` and the atime flags are locked).
    pub(crate) locked: rustix::mount::MountFlags,
}

impl Profile {
    pub fn builder(bundle: impl Into<PathBuf>) -> ProfileBuilder {
        ProfileBuilder {
            bundle: bundle.into(),
            grants: Vec::new(),
            tmp_size: DEFAULT_TMP_SIZE,
            limits: Limits::default(),
            host_ids: None,
            weakenings: Vec::new(),
        }
    }
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }
    pub fn tmp_size(&self) -> u64 {
        self.tmp_size
    }
    pub fn limits(&self) -> Limits {
        self.limits
    }
    pub fn ids(&self) -> IdMapping {
        self.ids
    }
    pub fn accepts(&self, w: Weakening) -> bool {
        self.weakenings.contains(&w)
    }
}

/// Builds a [`Profile`]; every value is checked in [`ProfileBuilder::build`].
#[derive(Clone, Debug)]
pub struct ProfileBuilder {
    bundle: PathBuf,
    grants: Vec<Grant>,
    tmp_size: u64,
    limits: Limits,
    host_ids: Option<HostIds>,
    weakenings: Vec<Weakening>,
}

impl ProfileBuilder {
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }
    /// Size cap of the private `/tmp` in bytes (default [`DEFAULT_TMP_SIZE`]).
    pub fn tmp_size(mut self, bytes: u64) -> Self {
        self.tmp_size = bytes;
        self
    }
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// The host uid/gid the program runs as when the host is root (default
    /// [`DEFAULT_ROOT_HOST_IDS`]). An unprivileged host can only run programs as itself, so
    /// asking for other ids there is an error.
    pub fn host_ids(mut self, ids: HostIds) -> Self {
        self.host_ids = Some(ids);
        self
    }
    /// Accept running without a kernel feature (see [`Weakening`]).
    pub fn accept(mut self, w: Weakening) -> Self {
        if !self.weakenings.contains(&w) {
            self.weakenings.push(w);
        }
        self
    }

    pub fn build(self) -> Result<Profile, ProfileError> {
        let bundle = canonical_dir("bundle", &self.bundle)?;
        if bundle == Path::new("/") {
            return Err(bad("bundle", "/", "the host's root cannot be the bundle"));
        }
        if self.grants.len() > MAX_GRANTS {
            return Err(ProfileError::TooManyGrants);
        }
        let mut grants: Vec<ResolvedGrant> = Vec::with_capacity(self.grants.len());
        for g in self.grants {
            if let Some(other) = grants
                .iter()
                .find(|o| o.at.contains(&g.at) || g.at.contains(&o.at))
            {
                return Err(ProfileError::Overlap(
                    other.at.to_string(),
                    g.at.to_string(),
                ));
            }
            let host = canonical_dir("granted folder", &g.host)?;
            let locked = locked_flags(&host)?;
            if g.access == Access::ReadWrite && locked.contains(rustix::mount::MountFlags::RDONLY) {
                return Err(ProfileError::ReadOnlySource {
                    at: g.at.0,
                    path: host,
                });
            }
            grants.push(ResolvedGrant {
                host,
                at: g.at,
                access: g.access,
                locked: locked - rustix::mount::MountFlags::RDONLY,
            });
        }
        if self.tmp_size < 4096 || self.tmp_size > MAX_TMP_SIZE {
            return Err(ProfileError::BadLimit {
                name: "tmp_size",
                value: self.tmp_size,
                reason: "must be between 4 KiB and 1 GiB",
            });
        }
        self.limits.check()?;
        let euid = rustix::process::geteuid().as_raw();
        let egid = rustix::process::getegid().as_raw();
        let ids = if euid == 0 {
            IdMapping::FromRoot {
                program: self.host_ids.unwrap_or(DEFAULT_ROOT_HOST_IDS),
            }
        } else {
            if let Some(h) = self.host_ids
                && (h.uid != euid || h.gid != egid)
            {
                return Err(ProfileError::BadHostIds {
                    uid: h.uid,
                    gid: h.gid,
                    reason: "an unprivileged host can only run programs as itself",
                });
            }
            IdMapping::Unprivileged {
                uid: euid,
                gid: egid,
            }
        };
        Ok(Profile {
            bundle,
            grants,
            tmp_size: self.tmp_size,
            limits: self.limits,
            ids,
            weakenings: self.weakenings,
        })
    }
}

/// Canonical (no symlink, no `..`) path of an existing directory, as UTF-8-free bytes are fine
/// but NUL bytes are not.
fn canonical_dir(what: &'static str, p: &Path) -> Result<PathBuf, ProfileError> {
    let c = std::fs::canonicalize(p).map_err(|source| ProfileError::Io {
        what,
        path: p.to_owned(),
        source,
    })?;
    if !c.is_dir() {
        return Err(ProfileError::NotADirectory { what, path: c });
    }
    if c.as_os_str().len() > MAX_PATH_LEN {
        return Err(bad(what, &c.to_string_lossy(), "too long"));
    }
    Ok(c)
}

/// The flags of the mount `p` is on that a remount in a user namespace must keep.
pub(crate) fn locked_flags(p: &Path) -> Result<rustix::mount::MountFlags, ProfileError> {
    use rustix::fs::StatVfsMountFlags as S;
    use rustix::mount::MountFlags as M;
    let st = rustix::fs::statvfs(p).map_err(|e| ProfileError::Io {
        what: "statvfs",
        path: p.to_owned(),
        source: e.into(),
    })?;
    let mut out = M::empty();
    for (s, m) in [
        (S::RDONLY, M::RDONLY),
        (S::NOSUID, M::NOSUID),
        (S::NODEV, M::NODEV),
        (S::NOEXEC, M::NOEXEC),
        (S::NOATIME, M::NOATIME),
        (S::NODIRATIME, M::NODIRATIME),
        (S::RELATIME, M::RELATIME),
    ] {
        if st.f_flag.contains(s) {
            out |= m;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sandbox_paths() {
        for ok in ["/data", "/data/x", "/a.b_c-d"] {
            assert!(ok.parse::<SandboxPath>().is_ok(), "{ok}");
        }
        for no in [
            "",
            "/",
            "data",
            "/data/",
            "//x",
            "/a/../b",
            "/./a",
            "/tmp",
            "/tmp/x",
            "/proc",
            "/bundle/x",
            "/dev",
            "/a b",
            "/a\0b",
        ] {
            assert!(no.parse::<SandboxPath>().is_err(), "{no:?}");
        }
    }

    #[test]
    fn bundle_paths() {
        assert_eq!(
            "bin/ext".parse::<BundlePath>().unwrap().in_sandbox(),
            "/bundle/bin/ext"
        );
        for no in ["", "/bin/ext", "../x", "a//b", "a/"] {
            assert!(no.parse::<BundlePath>().is_err(), "{no:?}");
        }
    }

    #[test]
    fn limits_and_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let at = |s: &str| s.parse::<SandboxPath>().unwrap();
        let r = Profile::builder(dir.path())
            .grant(Grant::new(dir.path(), at("/a"), Access::ReadOnly))
            .grant(Grant::new(dir.path(), at("/a/b"), Access::ReadOnly))
            .build();
        assert!(matches!(r, Err(ProfileError::Overlap(..))), "{r:?}");
        let r = Profile::builder(dir.path())
            .limits(Limits {
                open_files: 2,
                ..Limits::default()
            })
            .build();
        assert!(matches!(r, Err(ProfileError::BadLimit { .. })), "{r:?}");
        let r = Profile::builder(dir.path().join("missing")).build();
        assert!(matches!(r, Err(ProfileError::Io { .. })), "{r:?}");
        assert!(HostIds::new(0, 5).is_err());
        assert!(Profile::builder(dir.path()).build().is_ok());
    }
}
