//! The extension manifest (`extension.toml`), the operator's policy, grants, and the effective
//! permission set of an install (requested ∩ granted ∩ policy).
//!
//! Everything here is parsed once, at the edge, into types that cannot hold a bad value. This
//! crate knows nothing about Wasmtime, archives, signatures, HTTP or terminals.

pub mod ids;
pub mod path;
pub mod strict;

pub use ids::{ExtensionId, MethodName, NameError, PublisherName, SecretName, TenantName};
pub use path::{BundlePath, GuestPath, PathError};
pub use strict::TomlError;
pub mod endpoint;
pub mod host;
pub mod limits;
pub mod manifest;
pub mod remote;
pub mod units;

pub use endpoint::{Endpoint, MethodPattern, PathPattern};
pub use host::{AllowedHost, HostPattern, RequestHost, Scheme};
pub use limits::{Limits, Profile, RequestedLimits};
pub use manifest::{
    Entry, Extension, ExtismOptions, Filesystem, Kind, Manifest, Network, Permissions,
};
pub use remote::{RemoteEndpoint, RemoteOptions, RemoteProtocol, SpkiPin};
pub use units::{ByteSize, Span};
pub mod capability;
pub mod config;
pub mod effective;
pub mod grant;
pub mod policy;
pub mod storage;

pub use capability::Capability;
pub use config::Config;
pub use effective::{Effective, EffectiveError, EffectiveNetwork, Mount, MountSource, effective};
pub use grant::{Grant, GrantError, GrantItem};
pub use policy::{
    Ceiling, CeilingError, CompileLimits, ComponentPolicy, FileLimits, GatewayLimits, KvLimits,
    Policy, ProcessPolicy, RemotePolicy, WarmScope,
};
pub use storage::{BlobsUrl, DatabaseUrl, SharedStorage, Storage};
