//! `wasi:config/store@0.2.0-draft`: the secrets granted to (tenant, extension), nothing else.
//!
//! `get(name)` of a granted secret returns its value (or `none` if the operator never set
//! it) and records a grant (`secret`, target = the name). A name that was not declared or
//! not granted is an `upstream` error the guest sees plus a denial record; the call goes on.
//! `get-all` returns the granted secrets that are set. Every value handed out is added to
//! the call's [`Redactor`], so it never leaves the runtime in logs, records or errors.

use std::fmt;
use std::sync::Arc;

use warden_manifest::SecretName;
use warden_secrets::SecretValue;

use crate::redact::Redactor;
use crate::state::{CallState, allow, record};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config",
        world: "wasi:config/imports",
        // Reads go to SQLite on the blocking pool, never on the executor.
        imports: { default: async },
    });
}

pub(crate) use bindings::wasi::config::store;

/// Where an install's secret values come from; bound by the host to one (tenant, extension),
/// so nothing a guest asks can reach another install's secrets.
pub trait SecretSource: Send + Sync {
    /// The value of `name`, `None` if unset. An error must name the secret, never a value.
    fn get(&self, name: &SecretName) -> Result<Option<SecretValue>, String>;
}

/// An install's effective secret grant and where the values are read from.
#[derive(Clone)]
pub struct SecretAccess {
    /// Declared by the manifest, granted by the operator, allowed by policy.
    pub granted: Arc<[SecretName]>,
    pub source: Arc<dyn SecretSource>,
}

impl fmt::Debug for SecretAccess {
    /// Names only: there are no values here to show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretAccess")
            .field("granted", &self.granted)
            .finish_non_exhaustive()
    }
}

/// One call's view: the grant, and the redactor its values are added to.
#[derive(Default)]
pub(crate) struct SecretsState {
    access: Option<SecretAccess>,
    pub(crate) redactor: Redactor,
}

impl SecretsState {
    /// `inherited`: the caller's set, for a call made through `invoke`.
    pub(crate) fn new(access: Option<SecretAccess>, inherited: Option<Redactor>) -> Self {
        SecretsState {
            access,
            redactor: inherited.unwrap_or_default(),
        }
    }
}

const CAPABILITY: &str = "secret";

impl CallState {
    async fn read_secret(&mut self, name: SecretName) -> Result<Option<String>, store::Error> {
        let Some(access) = &self.secrets.access else {
            return Err(self.deny_secret(name.as_str()));
        };
        let source = Arc::clone(&access.source);
        let wanted = name.clone();
        let read = tokio::task::spawn_blocking(move || source.get(&wanted))
            .await
            .unwrap_or_else(|_| Err(format!("reading secret {name} failed")));
        match read {
            Ok(Some(v)) => {
                self.secrets.redactor.add(v.expose());
                allow(&self.denials, CAPABILITY, name.as_str());
                Ok(Some(v.expose().to_string()))
            }
            Ok(None) => Ok(None),
            Err(reason) => {
                // E.g. a row that no longer decrypts: the operator learns why from the record.
                record(&self.denials, CAPABILITY, name.as_str(), Some(reason));
                Err(store::Error::Io(format!("secret {name} cannot be read")))
            }
        }
    }

    fn deny_secret(&self, name: &str) -> store::Error {
        record(&self.denials, CAPABILITY, name, None);
        // The guest knows which name it asked for; echoing a name of any size helps nobody.
        store::Error::Upstream("access-denied: this secret is not granted to this extension".into())
    }

    fn granted(&self, name: &SecretName) -> bool {
        self.secrets
            .access
            .as_ref()
            .is_some_and(|a| a.granted.contains(name))
    }
}

impl store::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        match key.parse::<SecretName>() {
            Ok(name) if self.granted(&name) => self.read_secret(name).await,
            _ => Err(self.deny_secret(&key)),
        }
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        let names: Vec<SecretName> = self
            .secrets
            .access
            .as_ref()
            .map(|a| a.granted.to_vec())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let key = name.to_string();
            if let Some(v) = self.read_secret(name).await? {
                out.push((key, v));
            }
        }
        Ok(out)
    }
}

/// Links `wasi:config/store`.
pub(crate) fn add_to_linker(
    l: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<_, wasmtime::component::HasSelf<CallState>>(l, |s| s)
}
