//! `wasi:config/store@0.2.0-draft`: the secrets granted to (tenant, extension), nothing else.
//!
//! `get(name)` of a granted secret returns its value (or `none` if the operator never set
//! it) and records a grant (`secret`, target = the name). A name that was not declared or
//! not granted is an `upstream` error the guest sees plus a denial record; the call goes on.
//! `get-all` returns the granted secrets that are set. Every value handed out is added to
//! the call's [`Redactor`], so it never leaves the runtime in logs, records or errors.

use std::sync::Arc;

use warden_manifest::SecretName;
use warden_secrets::SecretAccess;

use warden_call::{Capability, Ledger, Redactor, Withheld};
use wasmtime::component::{HasData, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config",
        world: "wasi:config/imports",
        // Reads go to SQLite on the blocking pool, never on the executor.
        imports: { default: async },
    });
}

pub(crate) use bindings::wasi::config::store;

/// What `wasi:config/store` may touch of a call: the install's secret grant, the ledger, and
/// the redactor every value handed out joins.
pub(crate) struct SecretsView<'a> {
    pub(crate) access: Option<&'a SecretAccess>,
    pub(crate) ledger: &'a Ledger,
    pub(crate) redactor: &'a Redactor,
    pub(crate) withheld: Withheld,
}

impl SecretsView<'_> {
    async fn read_secret(&mut self, name: SecretName) -> Result<Option<String>, store::Error> {
        let Some(access) = self.access else {
            return Err(self.deny_secret(name.as_str()));
        };
        let source = Arc::clone(&access.source);
        let wanted = name.clone();
        let read = tokio::task::spawn_blocking(move || source.get(&wanted))
            .await
            .unwrap_or_else(|_| Err(format!("reading secret {name} failed")));
        match read {
            Ok(Some(v)) => {
                self.redactor.add(v.expose());
                self.ledger.allow(Capability::Secrets, name.as_str());
                Ok(Some(v.expose().to_string()))
            }
            Ok(None) => Ok(None),
            Err(reason) => {
                // E.g. a row that no longer decrypts: the operator learns why from the record.
                self.ledger
                    .deny(Capability::Secrets, name.as_str(), Some(reason));
                Err(store::Error::Io(format!("secret {name} cannot be read")))
            }
        }
    }

    fn deny_secret(&self, name: &str) -> store::Error {
        // The guest knows which name it asked for; echoing a name of any size helps nobody.
        if self.withheld.contains(Capability::Secrets) {
            let reason = self.withheld.reason(Capability::Secrets);
            self.ledger
                .deny(Capability::Secrets, name, Some(reason.clone()));
            return store::Error::Upstream(format!("access-denied: {reason}"));
        }
        self.ledger.deny(Capability::Secrets, name, None);
        store::Error::Upstream("access-denied: this secret is not granted to this extension".into())
    }

    fn granted(&self, name: &SecretName) -> bool {
        self.access.is_some_and(|a| a.granted.contains(name))
    }
}

impl store::Host for SecretsView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        match key.parse::<SecretName>() {
            Ok(name) if self.granted(&name) => self.read_secret(name).await,
            _ => Err(self.deny_secret(&key)),
        }
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        let names: Vec<SecretName> = self.access.map(|a| a.granted.to_vec()).unwrap_or_default();
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

struct Secrets;

impl HasData for Secrets {
    type Data<'a> = SecretsView<'a>;
}

/// Links `wasi:config/store`, with `view` giving each call's grant, ledger and redactor.
pub(crate) fn add_to_linker<T: Send + 'static>(
    l: &mut Linker<T>,
    view: fn(&mut T) -> SecretsView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Secrets>(l, view)
}
