//! Calls between extensions, on the host's side: the checks in order, then the callee runs as
//! its own top-level call would (its own grant, limits, permits and audit records), never with
//! the caller's capabilities.
//!
//! 1. The target must be a valid extension id in the caller's effective `calls` (declared in
//!    its manifest, granted, allowed by policy).
//! 2. No cycle (the target is not already on the chain), at most [`MAX_CALL_DEPTH`] calls deep,
//!    and at most [`MAX_NESTED_CALLS`] calls in all under one top-level call.
//! 3. The target is loaded for the same tenant, and is an rpc extension.
//! 4. The [`Authorizer`](crate::Authorizer) agrees.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use warden_manifest::ExtensionId;
use warden_runtime::Redactor;
use warden_runtime::{CallError, InvokeError, Invoker, WorldKind};

use crate::authorize::CallRequest;
use crate::host::Inner;
use crate::installed::Loaded;

/// Calls on the stack at most, counting the top-level one: A → B → C → D.
pub const MAX_CALL_DEPTH: usize = 4;
/// Calls to other extensions made, in all, under one top-level call (however deep).
pub const MAX_NESTED_CALLS: u32 = 100;

/// How a call was reached. The default is a top-level call.
#[derive(Clone, Default)]
pub(crate) struct Via {
    /// Extensions calling, outermost first (the called one not included).
    pub(crate) chain: Arc<[ExtensionId]>,
    /// The calling extension's secret values (see `CallCaps::redactor`).
    pub(crate) redactor: Option<Redactor>,
    /// The request id to record the call under (default: a new one). The invoker of a
    /// running call holds that call's own.
    pub(crate) request_id: Option<String>,
    /// Calls to other extensions made so far under the same top-level call: made with the
    /// first invoker of the call tree (a call that may call none needs no count).
    pub(crate) nested: Option<Arc<AtomicU32>>,
    /// The longest the call waits for a slot (`None`: the policy's `busy_wait`).
    pub(crate) busy_wait: Option<std::time::Duration>,
}

pub(crate) struct HostInvoker {
    host: Weak<Inner>,
    caller: Arc<Loaded>,
    /// How the caller's own call was reached.
    via: Via,
    /// The count of [`Via::nested`], shared with every call of the tree.
    nested: Arc<AtomicU32>,
}

impl HostInvoker {
    pub(crate) fn new(host: Weak<Inner>, caller: Arc<Loaded>, mut via: Via) -> Self {
        let nested = Arc::clone(via.nested.get_or_insert_with(Arc::default));
        HostInvoker {
            host,
            caller,
            via,
            nested,
        }
    }
}

fn denied(reason: impl Into<String>) -> InvokeError {
    InvokeError::Denied {
        reason: reason.into(),
    }
}

#[async_trait]
impl Invoker for HostInvoker {
    async fn invoke(
        &self,
        extension: &str,
        method: &str,
        input: Vec<u8>,
        redactor: Redactor,
    ) -> Result<Vec<u8>, InvokeError> {
        let caller = &self.caller.info;
        let Ok(callee) = extension.parse::<ExtensionId>() else {
            return Err(denied("not a valid extension id"));
        };
        if !caller.effective.calls.contains(&callee) {
            return Err(denied(format!(
                "{} may not call {callee}: not declared in permissions.calls or not granted",
                caller.id
            )));
        }
        if callee == caller.id || self.via.chain.contains(&callee) {
            return Err(denied(format!(
                "{callee} is already on the call chain (cycle)"
            )));
        }
        let depth = self.via.chain.len() + 1;
        if depth >= MAX_CALL_DEPTH {
            return Err(denied(format!(
                "calls between extensions may nest at most {MAX_CALL_DEPTH} deep"
            )));
        }
        let nth = self.nested.fetch_add(1, Ordering::Relaxed);
        if nth >= MAX_NESTED_CALLS {
            return Err(denied(format!(
                "at most {MAX_NESTED_CALLS} calls to other extensions per top-level call"
            )));
        }
        let Some(host) = self.host.upgrade() else {
            return Err(denied("the host is shutting down"));
        };
        let target = match current(&host, &caller.tenant, &callee)? {
            Some(t) => t,
            None => load_installed(&host, &caller.tenant, &callee).await?,
        };
        if target.info.kind != WorldKind::Rpc {
            return Err(InvokeError::Unavailable {
                code: "invalid".into(),
                message: format!("{callee} is an http extension and has no methods"),
            });
        }
        host.authorizer
            .authorize_call(&CallRequest {
                tenant: &caller.tenant,
                caller: &caller.id,
                callee: &callee,
                method,
                depth,
            })
            .map_err(denied)?;
        let mut chain: Vec<ExtensionId> = self.via.chain.to_vec();
        chain.push(caller.id.clone());
        let via = Via {
            chain: chain.into(),
            redactor: Some(redactor),
            // Under the caller's: `CALLER.N`, the Nth call made under the top-level one, so
            // that everything a request caused is found by its id.
            request_id: self
                .via
                .request_id
                .as_ref()
                .map(|caller| format!("{caller}.{}", nth + 1)),
            nested: Some(Arc::clone(&self.nested)),
            busy_wait: None,
        };
        match host
            .call_rpc(&caller.tenant, &callee, method, &input, via)
            .await
        {
            Ok(called) => Ok(called.value),
            Err(f) => Err(failed(f.error)),
        }
    }
}

/// The callee as loaded, if it may be called as it is. One loaded from the registry is checked
/// against its install on every call, as the gateway checks every request (red team: a callee
/// uninstalled, upgraded or regranted through another process stayed callable as it was
/// loaded): gone is `not-found` (and unloaded), changed is `None` (load it again). The registry
/// answers from memory while nothing changed. One the embedder loaded from a file is its own.
fn current(
    host: &Arc<Inner>,
    tenant: &warden_manifest::TenantName,
    callee: &ExtensionId,
) -> Result<Option<Arc<Loaded>>, InvokeError> {
    let loaded = host.get(tenant, callee);
    let (Some(l), Some((registry, _))) = (&loaded, &host.registry) else {
        return Ok(loaded);
    };
    if !l.installed {
        return Ok(loaded);
    }
    match registry.install(tenant, callee) {
        Ok(Some(i)) if i.content_hash == l.info.content_hash && i.grant == l.info.grant => {
            Ok(loaded)
        }
        Ok(Some(_)) => Ok(None),
        Ok(None) => {
            crate::tenant::Tenant::new(host, tenant.clone()).withdraw(callee);
            Err(InvokeError::Unavailable {
                code: "not-found".into(),
                message: format!("{callee} is not installed for this tenant"),
            })
        }
        Err(e) => {
            tracing::warn!(%callee, error = %warden_call::text::chain(&e), "the registry cannot be read");
            Err(InvokeError::Unavailable {
                code: "unavailable".into(),
                message: format!("{callee} cannot be checked now (the host's log says why)"),
            })
        }
    }
}

/// The callee installed for `tenant` but not loaded in this process yet (red team: it answered
/// "not loaded" until something else loaded it): loaded from the registry as a top-level call
/// loads it (`Admin::load_installed`: verified again against the trust bundle now, the
/// install's grant, compiled), off the async threads. A host without a registry, or a callee
/// not installed for the tenant, is `not-found`.
async fn load_installed(
    host: &Arc<Inner>,
    tenant: &warden_manifest::TenantName,
    callee: &ExtensionId,
) -> Result<Arc<Loaded>, InvokeError> {
    let not_found = || InvokeError::Unavailable {
        code: "not-found".into(),
        message: format!("{callee} is not installed for this tenant"),
    };
    if host.registry.is_none() {
        return Err(not_found());
    }
    let h = crate::Host {
        inner: Arc::clone(host),
    };
    let (t, c) = (tenant.clone(), callee.clone());
    let loaded = tokio::task::spawn_blocking(move || h.admin()?.load_installed(&t, &c)).await;
    match loaded {
        Ok(Ok(_)) => host.get(tenant, callee).ok_or_else(not_found),
        Ok(Err(crate::HostError::NotInstalled { .. })) => Err(not_found()),
        // The load's own failure is audited by the load (verification, policy, compile); the
        // guest is told no more than that (the host's paths and errors are not its business).
        Ok(Err(e)) => {
            tracing::warn!(%callee, error = %warden_call::text::chain(&e), "a callee could not be loaded");
            Err(InvokeError::Unavailable {
                code: "unavailable".into(),
                message: format!("{callee} could not be loaded (the host's log says why)"),
            })
        }
        Err(e) => {
            tracing::warn!(%callee, error = %e, "a callee's load stopped");
            Err(InvokeError::Unavailable {
                code: "unavailable".into(),
                message: format!("{callee} could not be loaded (the host's log says why)"),
            })
        }
    }
}

/// What the calling guest sees of the callee's failure: its own error as is, anything else as a
/// short code (the callee's audit record has the detail).
fn failed(e: CallError) -> InvokeError {
    match e {
        CallError::Extension { code, message } => InvokeError::Failed { code, message },
        other => InvokeError::Failed {
            code: other.guest_code().to_string(),
            message: other.to_string(),
        },
    }
}
