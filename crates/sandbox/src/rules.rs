//! The Landlock ruleset, built by the `landlock` crate in the parent for each spawn.
//!
//! Rules are bound to inodes, not paths: a rule on the host's bundle folder holds for the same
//! folder bind-mounted at `/bundle`. The only folder that does not exist before the fork is the
//! child's own `/tmp`; the child adds that one rule itself (see [`crate::child`]). A ruleset is
//! made per spawn, never shared, so rules for dead `/tmp`s do not pile up in a shared ruleset.
//!
//! Handled (denied unless a rule grants it): every file-system right of the kernel's ABI; TCP
//! bind and connect from ABI 4 (no rule grants them, so both are always denied); signals and
//! abstract Unix sockets leaving the sandbox's Landlock domain from ABI 6.

use std::os::fd::OwnedFd;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};

use crate::profile::{Access as Grant, Profile};

/// Building the ruleset failed (the kernel refused a rule, or a granted folder is gone).
#[derive(Debug, thiserror::Error)]
#[error("building the Landlock ruleset: {0}")]
pub struct RulesError(String);

fn err(e: impl std::fmt::Display) -> RulesError {
    RulesError(e.to_string())
}

/// The rights of each kind of path for one kernel ABI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rights {
    pub(crate) abi: ABI,
}

impl Rights {
    pub(crate) fn new(kernel_abi: i32) -> Rights {
        Rights {
            abi: ABI::from(kernel_abi),
        }
    }
    fn read(&self) -> BitFlags<AccessFs> {
        AccessFs::ReadFile | AccessFs::ReadDir
    }
    fn exec(&self) -> BitFlags<AccessFs> {
        self.read() | AccessFs::Execute
    }
    /// Everything but execute and device nodes.
    pub(crate) fn write(&self) -> BitFlags<AccessFs> {
        AccessFs::from_all(self.abi)
            & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock)
    }
    fn device(&self) -> BitFlags<AccessFs> {
        (AccessFs::ReadFile | AccessFs::WriteFile) & AccessFs::from_file(self.abi)
    }
    fn grant(&self, a: Grant) -> BitFlags<AccessFs> {
        match a {
            Grant::ReadOnly => self.read(),
            Grant::ReadWrite => self.write(),
            Grant::ReadExec => self.exec(),
        }
    }
}

/// Builds this spawn's ruleset and returns its descriptor.
pub(crate) fn build(profile: &Profile, rights: Rights) -> Result<OwnedFd, RulesError> {
    let abi = rights.abi;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if abi >= ABI::V4 {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    let mut rule = |path: &std::path::Path, access: BitFlags<AccessFs>| -> Result<(), RulesError> {
        let fd = PathFd::new(path).map_err(err)?;
        (&mut created)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(err)?;
        Ok(())
    };
    rule(profile.bundle(), rights.exec())?;
    for g in &profile.grants {
        rule(&g.host, rights.grant(g.access))?;
    }
    rule(std::path::Path::new("/dev/null"), rights.device())?;
    rule(std::path::Path::new("/dev/urandom"), rights.device())?;
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| RulesError("the kernel has no Landlock".to_owned()))
}
