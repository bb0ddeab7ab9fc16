//! What one call may do beyond computing, as decided by the host: one field per capability.
//! Each capability's enforcement lives in its own module; absent means denied.

use std::fmt;
use std::sync::Arc;

use warden_call::{Invoker, Ledger, Redactor, Withheld};
use warden_fs::{FsQuota, MountDir};
use warden_kv::KvAccess;
use warden_manifest::EffectiveNetwork;
use warden_net::{Resolver, SystemResolver};
use warden_secrets::SecretAccess;

use crate::fair::Share;

/// What an install may do, the same for every one of its calls: made once when it loads and
/// shared by its calls (each holds one reference, rather than a copy of every field).
pub struct InstallCaps {
    /// The install's effective network grant; `None` denies every request, socket and lookup.
    pub network: Option<Arc<EffectiveNetwork>>,
    /// How allowed names are resolved (default: the operating system's resolver).
    pub resolver: Arc<dyn Resolver>,
    /// Host folders preopened for the guest (see the file-system bindings); empty = no file system.
    pub mounts: Arc<[MountDir]>,
    /// Mounts requested but not granted: preopened read-only on an empty folder so that the
    /// guest's attempts reach the host, which refuses (`not-permitted`) and records each one.
    pub denied_mounts: Arc<[MountDir]>,
    /// The install's quota on its read-write mounts, shared by all its calls (see
    /// [`FsQuota`]); `None`: unlimited (no read-write mount, or an embedder's choice).
    pub fs_quota: Option<FsQuota>,
    /// The install's granted secrets (see the `wasi:config` bindings); `None` denies every `get`.
    pub secrets: Option<SecretAccess>,
    /// The install's key-value store (see the key-value bindings); `None` denies every `open`.
    pub kv: Option<KvAccess>,
    /// Capabilities the operator's policy forbids this install (refusals say so).
    pub withheld: Withheld,
    /// The CPU share its calls' guest code runs on (see [`crate::fair`]); `None`: no turns.
    pub share: Option<Share>,
}

impl Default for InstallCaps {
    /// Nothing granted; names (if ever) resolved by the system.
    fn default() -> Self {
        InstallCaps {
            network: None,
            resolver: Arc::new(SystemResolver),
            mounts: Arc::new([]),
            denied_mounts: Arc::new([]),
            fs_quota: None,
            secrets: None,
            kv: None,
            withheld: Withheld::default(),
            share: None,
        }
    }
}

impl fmt::Debug for InstallCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallCaps")
            .field("network", &self.network)
            .field("mounts", &self.mounts)
            .field("denied_mounts", &self.denied_mounts)
            .field("fs_quota", &self.fs_quota)
            // Names only: values are read per call and never held here.
            .field("secrets", &self.secrets)
            .field("kv", &self.kv)
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

/// What one call may do: its install's capabilities (read through, as `caps.network`), and
/// what is its own.
#[derive(Clone)]
pub struct CallCaps {
    pub install: Arc<InstallCaps>,
    /// Calls to other extensions (see the invoke bindings); `None` denies every call.
    pub invoker: Option<Arc<dyn Invoker>>,
    /// For a call made through `invoke`: the caller's secret values, which this call's report
    /// is redacted of as well (and the values this call reads join them). `None`: a fresh set.
    pub redactor: Option<Redactor>,
    /// Whether the call takes turns of its install's share (false: it is polled inside its
    /// caller's turn, as a call from another extension is).
    pub own_turns: bool,
    /// The call's record of uses and denials, which every kind of call writes to. The host
    /// gives each call a fresh one and keeps a clone, so that a call stopped part-way (its
    /// caller went away) is still recorded with what it had done.
    pub ledger: Ledger,
    /// What an instance kept between calls (`crate::WarmInstances`) was made under: one kept
    /// under another generation is dropped instead of answering. The host derives it from the
    /// install's secret values, so a secret rotated or removed ends the kept instances that
    /// may hold the old value.
    pub generation: u64,
}

impl CallCaps {
    /// A call of an install with `install`'s capabilities, and nothing of its own yet.
    pub fn of(install: Arc<InstallCaps>) -> CallCaps {
        CallCaps {
            install,
            invoker: None,
            redactor: None,
            own_turns: true,
            ledger: Ledger::default(),
            generation: 0,
        }
    }

    /// The share whose turns the call's guest code takes, if any.
    pub fn share(&self) -> Option<&Share> {
        self.install.share.as_ref().filter(|_| self.own_turns)
    }
}

impl std::ops::Deref for CallCaps {
    type Target = InstallCaps;

    fn deref(&self) -> &InstallCaps {
        &self.install
    }
}

impl Default for CallCaps {
    /// Nothing granted; names (if ever) resolved by the system.
    fn default() -> Self {
        CallCaps::of(Arc::default())
    }
}

impl fmt::Debug for CallCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCaps")
            .field("install", &self.install)
            .field("invoker", &self.invoker.is_some())
            .field("own_turns", &self.own_turns)
            .finish_non_exhaustive()
    }
}
