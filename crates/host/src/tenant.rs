//! [`Tenant`]: one tenant's view of a [`Host`]. Everything an extension keeps is per
//! (tenant, extension): what a tenant loads, calls and stores through its view is its own.

use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_secrets::SecretValue;

use warden_audit::{Event, Outcome, Record};

use crate::error::HostError;
use crate::host::{Host, Inner};
use std::sync::Arc;

use crate::installed::{ExtensionInfo, Loaded, Retired};

/// One install as loaded when it was looked at ([`Tenant::loaded`]).
#[derive(Clone)]
pub struct LoadedInstall(Arc<Loaded>);

impl LoadedInstall {
    pub fn info(&self) -> &ExtensionInfo {
        &self.0.info
    }
}

/// One tenant's view of a [`Host`]: what it loads and calls is its own.
pub struct Tenant<'h> {
    pub(crate) inner: &'h std::sync::Arc<Inner>,
    pub(crate) name: TenantName,
    /// The longest its calls wait for a slot of their extension (`None`: the policy's
    /// `busy_wait`).
    pub(crate) busy_wait: Option<std::time::Duration>,
}

impl<'h> Tenant<'h> {
    pub(crate) fn new(inner: &'h std::sync::Arc<Inner>, name: TenantName) -> Self {
        Tenant {
            inner,
            name,
            busy_wait: None,
        }
    }

    /// This view, with its calls waiting at most `wait` for a slot of their extension: less
    /// than the policy's `busy_wait` (never more), for a caller that already spent part of
    /// it on the same request (a service waiting for its tenant's own limits first), so that
    /// the request waits `busy_wait` in all.
    pub fn waiting_at_most(mut self, wait: std::time::Duration) -> Self {
        self.busy_wait = Some(wait.min(self.inner.policy.busy_wait));
        self
    }
}

impl Host {
    /// The view of one tenant: loads and calls through it are that tenant's.
    pub fn tenant(&self, name: &TenantName) -> Tenant<'_> {
        Tenant::new(&self.inner, name.clone())
    }

    /// The view of the tenant named `default` (what `warden run` uses).
    pub fn default_tenant(&self) -> Tenant<'_> {
        Tenant::new(&self.inner, self.inner.default_tenant.clone())
    }
}

impl Tenant<'_> {
    pub fn name(&self) -> &TenantName {
        &self.name
    }

    /// Unloads `id` for this tenant: calls from now on do not find it (calls in flight end
    /// as they are; calls waiting for one of its slots are refused as busy at once). Returns
    /// whether it was loaded.
    pub fn unload(&self, id: &ExtensionId) -> bool {
        self.take(id, Retired::Replaced, None)
    }

    /// Takes `id` away from this tenant, as its uninstall does: calls from now on do not find
    /// it, calls waiting for one of its slots are refused, and calls running are stopped
    /// (each still leaves its audit record, saying so). For an install removed by another
    /// process (another runner of a fleet). Returns whether it was loaded.
    pub fn withdraw(&self, id: &ExtensionId) -> bool {
        self.take(id, Retired::Removed, None)
    }

    /// [`Tenant::withdraw`] of `record` only if it is still the one loaded: one loaded since
    /// (installed again) was not judged and stays.
    pub(crate) fn withdraw_record(&self, record: &Arc<Loaded>) -> bool {
        self.take(&record.info.id, Retired::Removed, Some(record))
    }

    /// What is loaded as `id` now, to be judged (against the registry) and then withdrawn
    /// with [`Tenant::withdraw_loaded`] only if it is still what is loaded.
    pub fn loaded(&self, id: &ExtensionId) -> Option<LoadedInstall> {
        self.inner.get(&self.name, id).map(LoadedInstall)
    }

    /// [`Tenant::withdraw`] of what [`Tenant::loaded`] returned, only if it is still the one
    /// loaded: an install loaded since (installed again meanwhile) stays.
    pub fn withdraw_loaded(&self, loaded: &LoadedInstall) -> bool {
        self.withdraw_record(&loaded.0)
    }

    fn take(&self, id: &ExtensionId, how: Retired, only: Option<&Arc<Loaded>>) -> bool {
        let removed = match self.inner.extensions.write() {
            Ok(mut loaded) => loaded.get_mut(&self.name).and_then(|t| {
                let judged = only.is_none_or(|r| t.get(id).is_some_and(|now| Arc::ptr_eq(now, r)));
                if judged { t.remove(id) } else { None }
            }),
            Err(_) => None,
        };
        match removed {
            Some(old) => {
                self.inner.retire(old, how);
                true
            }
            None => false,
        }
    }

    /// Information about an extension loaded for this tenant.
    pub fn extension(&self, id: &ExtensionId) -> Option<ExtensionInfo> {
        self.inner.get(&self.name, id).map(|l| l.info.clone())
    }
}

impl Tenant<'_> {
    /// Stores a secret for this tenant's `extension`, encrypted at rest (in memory only
    /// without a data dir). Calls read the new value from their next `get`. Audited (the
    /// name, never the value); a record that cannot be stored fails the call with why.
    pub fn put_secret(
        &self,
        extension: &ExtensionId,
        name: &SecretName,
        value: SecretValue,
    ) -> Result<(), HostError> {
        self.put_secret_as(self.inner.ids.next(), extension, name, value)
    }

    /// [`Tenant::put_secret`], audited under `request_id` (the admin request that set it).
    pub fn put_secret_as(
        &self,
        request_id: String,
        extension: &ExtensionId,
        name: &SecretName,
        value: SecretValue,
    ) -> Result<(), HostError> {
        // The host's own secret: whatever route sets it, it must be a client certificate.
        if name.as_str() == crate::remote::CLIENT_IDENTITY {
            let pem = value.expose().as_bytes();
            warden_remote::ClientIdentity::from_pem(pem, pem)
                .map_err(|e| HostError::Remote(e.to_string()))?;
        }
        self.inner
            .change_gate(self.secret_record(request_id.clone(), extension, name, "set"))?;
        let stored = self
            .inner
            .secrets
            .store
            .put(&self.name, extension, name, &value);
        self.audit_secret(
            request_id,
            extension,
            name,
            "set",
            stored.as_ref().map(|_| ()),
        )?;
        Ok(stored?)
    }

    /// Removes a stored secret; `true` if it existed. Audited like [`Tenant::put_secret`].
    pub fn delete_secret(
        &self,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, HostError> {
        self.delete_secret_as(self.inner.ids.next(), extension, name)
    }

    /// [`Tenant::delete_secret`], audited under `request_id`.
    pub fn delete_secret_as(
        &self,
        request_id: String,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, HostError> {
        self.inner.change_gate(self.secret_record(
            request_id.clone(),
            extension,
            name,
            "removed",
        ))?;
        let removed = self.inner.secrets.store.delete(&self.name, extension, name);
        let what = match &removed {
            Ok(false) => "removed (there was none)",
            _ => "removed",
        };
        self.audit_secret(
            request_id,
            extension,
            name,
            what,
            removed.as_ref().map(|_| ()),
        )?;
        Ok(removed?)
    }

    fn audit_secret<E: std::error::Error + 'static>(
        &self,
        request_id: String,
        extension: &ExtensionId,
        name: &SecretName,
        what: &str,
        result: Result<(), &E>,
    ) -> Result<(), HostError> {
        let record = self.secret_record(request_id, extension, name, what);
        let record = match result {
            Ok(()) => record.with_outcome(Outcome::Ok),
            Err(e) => record.with_outcome(Outcome::Error).with_error(e),
        };
        self.inner.record_change(record)
    }

    fn secret_record(
        &self,
        request_id: String,
        extension: &ExtensionId,
        name: &SecretName,
        what: &str,
    ) -> Record {
        Record::new(Event::Secret, request_id)
            .with_tenant(&self.name)
            .with_extension(extension.as_str())
            .with_target(name.as_str())
            .with_message(format!("secret {what}"))
    }

    /// Sets a secret for this host's lifetime only: never written to disk, it shadows a stored
    /// value of the same name (`warden run --secret`).
    pub fn put_transient_secret(
        &self,
        extension: &ExtensionId,
        name: &SecretName,
        value: SecretValue,
    ) -> Result<(), HostError> {
        self.inner
            .secrets
            .transient
            .write()
            .map_err(|_| HostError::Poisoned("secret table"))?
            .insert((self.name.clone(), extension.clone(), name.clone()), value);
        Ok(())
    }
}

impl Tenant<'_> {
    /// Sets the client certificate (PEM, leaf first) and key (PEM) a remote extension of this
    /// tenant presents to its server, issued by the operator for this install. Checked, then
    /// kept encrypted like a secret (under [`crate::CLIENT_IDENTITY`]) and audited as one; the
    /// install's next call uses it (every call reads it again, on every runner of a fleet).
    pub fn set_client_identity(
        &self,
        extension: &ExtensionId,
        certificates: &str,
        key: &str,
    ) -> Result<(), HostError> {
        let pem = identity_pem(certificates, key)?;
        self.put_secret(extension, &crate::remote::identity_name()?, pem)
    }

    /// [`Tenant::set_client_identity`] for this host's lifetime only (`warden run
    /// --client-cert`): never written to disk.
    pub fn set_transient_client_identity(
        &self,
        extension: &ExtensionId,
        certificates: &str,
        key: &str,
    ) -> Result<(), HostError> {
        let pem = identity_pem(certificates, key)?;
        self.put_transient_secret(extension, &crate::remote::identity_name()?, pem)
    }
}

/// The certificates and key, checked to read, as one PEM secret.
fn identity_pem(certificates: &str, key: &str) -> Result<SecretValue, HostError> {
    warden_remote::ClientIdentity::from_pem(certificates.as_bytes(), key.as_bytes())
        .map_err(|e| HostError::Remote(e.to_string()))?;
    let mut pem = certificates.trim_end().to_string();
    pem.push('\n');
    pem.push_str(key.trim_end());
    pem.push('\n');
    SecretValue::new(pem).map_err(|e| HostError::Remote(format!("the client certificate: {e}")))
}
