//! The embedder's say over loads and calls between extensions.
//!
//! The host always checks the manifest and the operator's policy first (a call to an extension
//! the caller did not declare, or that was not granted, never reaches the authorizer); an
//! [`Authorizer`] can only refuse more, never allow more.

use warden_bundle::ContentHash;
use warden_manifest::{Effective, ExtensionId, Manifest, TenantName};

/// A load about to happen: the bundle is verified and its effective permissions are computed.
#[derive(Debug)]
pub struct LoadRequest<'a> {
    pub tenant: &'a TenantName,
    pub manifest: &'a Manifest,
    pub content_hash: ContentHash,
    pub effective: &'a Effective,
}

/// A call from one extension to another, already allowed by the caller's manifest and grant.
#[derive(Debug)]
pub struct CallRequest<'a> {
    pub tenant: &'a TenantName,
    pub caller: &'a ExtensionId,
    pub callee: &'a ExtensionId,
    pub method: &'a str,
    /// Calls already on the stack below this one (1 for a call made by a top-level call).
    pub depth: usize,
}

/// Decides loads and calls between extensions beyond what manifests and policy say. An `Err`
/// carries the reason, which is audited and shown to the caller (keep secrets out of it).
pub trait Authorizer: Send + Sync {
    fn authorize_load(&self, request: &LoadRequest<'_>) -> Result<(), String> {
        let _ = request;
        Ok(())
    }

    fn authorize_call(&self, request: &CallRequest<'_>) -> Result<(), String> {
        let _ = request;
        Ok(())
    }
}

/// The default: what the manifests and the operator's policy and grants allow, nothing more.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManifestAuthorizer;

impl Authorizer for ManifestAuthorizer {}
