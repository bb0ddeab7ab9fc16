//! `extension.toml`: read strictly into [`Manifest`].

use std::time::Duration;

use crate::endpoint::{Endpoint, MethodPattern, PathPattern};
use crate::host::AllowedHost;
use crate::ids::{ExtensionId, MethodName, PublisherName, SecretName};
use crate::limits::{Profile, RequestedLimits};
use crate::path::{BundlePath, GuestPath};
use crate::remote::{MAX_PINS, RemoteEndpoint, RemoteError, RemoteOptions, SpkiPin};
use crate::strict::{Document, Table, TomlError, Value};
use crate::units::{ByteSize, Span};

/// The only manifest schema this version understands.
pub const SCHEMA: u64 = 1;
/// Guest path of the bundle's own read-only `assets/` folder.
pub const ASSETS_GUEST_PATH: &str = "/assets";
/// BundleLimits on lists, so a manifest cannot make later checks expensive.
pub const MAX_LIST_ITEMS: usize = 256;
const MAX_DESCRIPTION_BYTES: usize = 4096;
const MAX_ARG_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A WebAssembly component (the strong sandbox).
    Component,
    /// A native program behind the OS sandbox.
    Process,
    /// A core WebAssembly module built with an Extism PDK: its `[[methods]]` are exports
    /// `() -> i32`, and it imports only the Extism host functions (`extism:host/env`).
    Extism,
    /// A service elsewhere, reached over TLS with pinned keys (`entry` is its endpoint,
    /// `[remote]` its pins): its `[[methods]]` are called over JSON-RPC or gRPC.
    Remote,
}

/// What `entry` names: a file of the bundle, or a remote extension's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(BundlePath),
    Remote(RemoteEndpoint),
}

impl Entry {
    /// The bundle file, for every kind but `remote`.
    pub fn file(&self) -> Option<&BundlePath> {
        match self {
            Entry::File(p) => Some(p),
            Entry::Remote(_) => None,
        }
    }

    /// The endpoint, for `remote`.
    pub fn remote(&self) -> Option<&RemoteEndpoint> {
        match self {
            Entry::File(_) => None,
            Entry::Remote(e) => Some(e),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::File(p) => write!(f, "{p}"),
            Entry::Remote(e) => write!(f, "{e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub id: ExtensionId,
    pub version: semver::Version,
    pub publisher: PublisherName,
    pub kind: Kind,
    pub entry: Entry,
    /// Process extensions only; always empty for components.
    pub args: Vec<String>,
    pub description: String,
    pub ui: Option<BundlePath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    pub enabled: bool,
    pub allowed_hosts: Vec<AllowedHost>,
    /// Ports for entries that name none; empty means 443 and 80.
    pub allowed_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filesystem {
    pub paths: Vec<GuestPath>,
    pub readonly_paths: Vec<GuestPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    pub kv: bool,
    pub secrets: Vec<SecretName>,
    pub calls: Vec<ExtensionId>,
    pub network: Network,
    pub filesystem: Filesystem,
}

/// What an Extism plug-in asks of its host beyond Extism's own functions (`[extism]`, only for
/// `kind = "extism"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtismOptions {
    /// WASI preview 1 (`wasi_snapshot_preview1`), as Extism's own `wasi: true`: clocks,
    /// random, stdout/stderr into the call's log, and `[permissions.filesystem]`'s mounts as
    /// for components; no arguments, environment or sockets.
    /// The Go, JavaScript and Python PDKs need it.
    pub wasi: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub extension: Extension,
    pub endpoints: Vec<Endpoint>,
    pub methods: Vec<MethodName>,
    pub permissions: Permissions,
    pub limits: RequestedLimits,
    pub extism: ExtismOptions,
    /// `[remote]`, for (and only for) `kind = "remote"`.
    pub remote: Option<RemoteOptions>,
}

impl Manifest {
    /// Parses and validates `extension.toml`. Every error names the key and its line.
    pub fn parse(text: &str) -> Result<Manifest, TomlError> {
        let doc = Document::parse(text)?;
        let root = doc.root();
        let schema = root.require("schema")?;
        if schema.as_u64()? != SCHEMA {
            return Err(schema.error(format!(
                "unsupported schema; this warden reads schema {SCHEMA}"
            )));
        }
        let extension = extension(&root.require("extension")?.as_table()?)?;
        let endpoints = match root.get("endpoints") {
            Some(v) => endpoints(&v)?,
            None => Vec::new(),
        };
        let methods = match root.get("methods") {
            Some(v) => methods(&v)?,
            None => Vec::new(),
        };
        // An endpoint that calls a method calls one the manifest lists.
        if let Some(v) = root.get("endpoints") {
            for (ep, item) in endpoints.iter().zip(v.as_array()?) {
                if ep.call.is_none() && extension.kind == Kind::Process {
                    return Err(item.error(
                        "a process extension answers calls, not HTTP: this endpoint needs `call = \"METHOD\"`",
                    ));
                }
                if ep.call.is_none() && extension.kind == Kind::Extism {
                    return Err(item.error(
                        "an Extism plug-in answers calls to its exports, not HTTP: this endpoint needs `call = \"METHOD\"`",
                    ));
                }
                if let Some(call) = &ep.call
                    && !methods.contains(call)
                {
                    let table = item.as_table()?;
                    let at = table.require("call")?;
                    return Err(at.error(format!(
                        "calls {call:?}, which is not one of the manifest's [[methods]]"
                    )));
                }
            }
        }
        if extension.kind == Kind::Extism && methods.is_empty() {
            let table = root.require("extension")?.as_table()?;
            return Err(table.require("kind")?.error(
                "an Extism plug-in lists the exports it may be called by as [[methods]] \
                 (each a function `() -> i32`); this manifest lists none",
            ));
        }
        let extism = match root.get("extism") {
            Some(v) if extension.kind != Kind::Extism => {
                return Err(v.error("[extism] is only for kind = \"extism\""));
            }
            Some(v) => extism(&v.as_table()?)?,
            None => ExtismOptions::default(),
        };
        let permissions = match root.get("permissions") {
            Some(v) => permissions(&v.as_table()?, &extension, &extism)?,
            None => Permissions::default(),
        };
        let limits = match root.get("limits") {
            Some(v) => limits(&v.as_table()?)?,
            None => RequestedLimits::default(),
        };
        if extension.kind == Kind::Remote && methods.is_empty() {
            let table = root.require("extension")?.as_table()?;
            return Err(table.require("kind")?.error(
                "a remote extension lists the methods it answers as [[methods]]; this \
                 manifest lists none",
            ));
        }
        let remote = match (root.get("remote"), extension.kind) {
            (Some(v), Kind::Remote) => Some(remote(&v.as_table()?, &extension)?),
            (Some(v), _) => return Err(v.error("[remote] is only for kind = \"remote\"")),
            (None, Kind::Remote) => {
                let table = root.require("extension")?.as_table()?;
                return Err(table.require("kind")?.error(
                    "a remote extension needs [remote] with the pins of its server's keys: \
                     pins = [\"sha256/<base64>\"]",
                ));
            }
            (None, _) => None,
        };
        root.finish()?;
        Ok(Manifest {
            extension,
            endpoints,
            methods,
            permissions,
            limits,
            extism,
            remote,
        })
    }
}

fn remote(t: &Table<'_, '_>, ext: &Extension) -> Result<RemoteOptions, TomlError> {
    let pins_v = t.require("pins")?;
    let mut pins: Vec<SpkiPin> = Vec::new();
    let items = capped(&pins_v)?;
    if items.len() > MAX_PINS {
        return Err(pins_v.error(format!("more than {MAX_PINS} pins")));
    }
    for item in items {
        let pin: SpkiPin = item
            .as_str()?
            .parse()
            .map_err(|e: RemoteError| item.error(e.to_string()))?;
        if !pins.contains(&pin) {
            pins.push(pin);
        }
    }
    if pins.is_empty() {
        return Err(pins_v.error(
            "a remote extension pins at least one key of its server: pins = [\"sha256/<base64>\"]",
        ));
    }
    let ca = match t.get("ca") {
        Some(v) => {
            let p: BundlePath = v.parse()?;
            if p.as_str() == "extension.toml"
                || p.segments().next() == Some("assets")
                || ext.ui.as_ref().is_some_and(|u| p.is_within(u))
            {
                return Err(v.error(
                    "the CA file is its own file of the bundle, not the manifest, assets/ or ui",
                ));
            }
            Some(p)
        }
        None => None,
    };
    t.finish_ref()?;
    Ok(RemoteOptions { pins, ca })
}

fn extism(t: &Table<'_, '_>) -> Result<ExtismOptions, TomlError> {
    let wasi = match t.get("wasi") {
        Some(v) => v.as_bool()?,
        None => false,
    };
    t.finish_ref()?;
    Ok(ExtismOptions { wasi })
}

fn capped<'d, 's>(v: &Value<'d, 's>) -> Result<Vec<Value<'d, 's>>, TomlError> {
    let items = v.as_array()?;
    if items.len() > MAX_LIST_ITEMS {
        return Err(v.error(format!("more than {MAX_LIST_ITEMS} entries")));
    }
    Ok(items)
}

fn extension(t: &Table<'_, '_>) -> Result<Extension, TomlError> {
    let id: ExtensionId = t.require("id")?.parse()?;
    let version_v = t.require("version")?;
    let version: semver::Version = version_v.parse()?;
    // Build metadata (`1.0.0+a`) is refused, not ignored: SemVer precedence ignores it, so
    // `1.0.0+a` and `1.0.0+b` would be one version with two contents, and every rule keyed on
    // a version (one content per id and version, no silent rollback) could be walked around
    // by changing it. Refusing it at the edge keeps a version string one identity.
    if !version.build.is_empty() {
        return Err(version_v.error(format!(
            "version {version} has build metadata (+{}): not allowed, a version names one \
             content; bump the version (or use a pre-release, -{})",
            version.build, version.build
        )));
    }
    let publisher: PublisherName = t.require("publisher")?.parse()?;
    let kind_v = t.require("kind")?;
    let kind = match kind_v.as_str()? {
        "component" => Kind::Component,
        "process" => Kind::Process,
        "extism" => Kind::Extism,
        "remote" => Kind::Remote,
        _ => {
            return Err(
                kind_v.error("kind must be \"component\", \"process\", \"extism\" or \"remote\"")
            );
        }
    };
    let entry_v = t.require("entry")?;
    let entry = if kind == Kind::Remote {
        let endpoint: RemoteEndpoint = entry_v
            .as_str()?
            .parse()
            .map_err(|e: RemoteError| entry_v.error(e.to_string()))?;
        Entry::Remote(endpoint)
    } else {
        let entry: BundlePath = entry_v.parse()?;
        if entry.as_str() == "extension.toml" {
            return Err(entry_v.error("the entry cannot be the manifest itself"));
        }
        Entry::File(entry)
    };
    let args = match t.get("args") {
        None => Vec::new(),
        Some(v) => {
            let mut args = Vec::new();
            for a in capped(&v)? {
                let s = a.as_str()?;
                if s.len() > MAX_ARG_BYTES || s.contains('\0') {
                    return Err(a.error(format!(
                        "argument must be at most {MAX_ARG_BYTES} bytes with no NUL"
                    )));
                }
                args.push(s.to_string());
            }
            if kind != Kind::Process && !args.is_empty() {
                return Err(v.error(
                    "args are only for kind = \"process\"; components, Extism plug-ins and \
                     remote extensions get no arguments",
                ));
            }
            args
        }
    };
    let description = match t.get("description") {
        None => String::new(),
        Some(v) => {
            let s = v.as_str()?;
            if s.len() > MAX_DESCRIPTION_BYTES {
                return Err(v.error(format!(
                    "description is longer than {MAX_DESCRIPTION_BYTES} bytes"
                )));
            }
            s.to_string()
        }
    };
    let ui = match t.get("ui") {
        None => None,
        Some(v) => {
            let p: BundlePath = v.parse()?;
            if p.as_str() == "assets"
                || p.as_str() == "extension.toml"
                || entry.file().is_some_and(|e| e.is_within(&p))
            {
                return Err(
                    v.error("ui must be its own folder, not assets/, the manifest or the entry")
                );
            }
            Some(p)
        }
    };
    if let Some(file) = entry.file()
        && (file.segments().next() == Some("assets")
            || ui.as_ref().is_some_and(|u| file.is_within(u)))
    {
        return Err(entry_v.error("the entry cannot live in assets/ or the ui folder"));
    }
    t.finish_ref()?;
    Ok(Extension {
        id,
        version,
        publisher,
        kind,
        entry,
        args,
        description,
        ui,
    })
}

fn endpoints(v: &Value<'_, '_>) -> Result<Vec<Endpoint>, TomlError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for item in capped(v)? {
        let t = item.as_table()?;
        let method: MethodPattern = t.require("method")?.parse()?;
        let path_v = t.require("path")?;
        let path: PathPattern = path_v.parse()?;
        let call = t.get("call").map(|v| v.parse::<MethodName>()).transpose()?;
        let ep = Endpoint { method, path, call };
        if out
            .iter()
            .any(|e: &Endpoint| e.method == ep.method && e.path == ep.path)
        {
            return Err(path_v.error("duplicate endpoint"));
        }
        t.finish_ref()?;
        out.push(ep);
    }
    Ok(out)
}

fn methods(v: &Value<'_, '_>) -> Result<Vec<MethodName>, TomlError> {
    let mut out: Vec<MethodName> = Vec::new();
    for item in capped(v)? {
        let t = item.as_table()?;
        let name_v = t.require("name")?;
        let name: MethodName = name_v.parse()?;
        if out.contains(&name) {
            return Err(name_v.error(format!("duplicate method {name:?}")));
        }
        t.finish_ref()?;
        out.push(name);
    }
    Ok(out)
}

fn permissions(
    t: &Table<'_, '_>,
    ext: &Extension,
    extism: &ExtismOptions,
) -> Result<Permissions, TomlError> {
    let kv = match t.get("kv") {
        Some(v) => v.as_bool()?,
        None => false,
    };
    let secrets: Vec<SecretName> = match t.get("secrets") {
        Some(v) => {
            capped(&v)?;
            let names: Vec<SecretName> = v.parse_list()?;
            if let Some(n) = names.iter().find(|n| n.as_str().starts_with("WARDEN_")) {
                return Err(v.error(format!(
                    "secret names starting with WARDEN_ are the host's own ({n})"
                )));
            }
            names
        }
        None => Vec::new(),
    };
    let calls: Vec<ExtensionId> = match t.get("calls") {
        Some(v) => {
            capped(&v)?;
            let calls: Vec<ExtensionId> = v.parse_list()?;
            if calls.contains(&ext.id) {
                return Err(v.error("an extension cannot list itself in calls"));
            }
            calls
        }
        None => Vec::new(),
    };
    let network = match t.get("network") {
        Some(v) => network(&v.as_table()?)?,
        None => Network::default(),
    };
    let filesystem = match t.get("filesystem") {
        Some(v) => filesystem(&v.as_table()?)?,
        None => Filesystem::default(),
    };
    if ext.kind == Kind::Remote {
        // It runs elsewhere: no files or network of this host. Key-value, secrets and calls
        // reach it as host requests it makes during a call.
        let elsewhere = [
            (
                "filesystem",
                !filesystem.paths.is_empty() || !filesystem.readonly_paths.is_empty(),
            ),
            ("network", network.enabled),
        ];
        for (key, asked) in elsewhere {
            if let (true, Some(v)) = (asked, t.get(key)) {
                return Err(
                    v.error("a remote extension runs elsewhere: it has no files or network here")
                );
            }
        }
    }
    if ext.kind == Kind::Extism {
        // Extism's host functions reach config (secrets), vars, logs and HTTP; a plug-in has
        // no way to use key-value storage or calls to other extensions, and reaches files
        // only through WASI.
        let unusable = [("kv", kv), ("calls", !calls.is_empty())];
        for (key, asked) in unusable {
            if let (true, Some(v)) = (asked, t.get(key)) {
                return Err(v.error(
                    "an Extism plug-in has no host function for this (Extism's are config, \
                     vars, logging and http_request)",
                ));
            }
        }
        let files = !filesystem.paths.is_empty() || !filesystem.readonly_paths.is_empty();
        if let (true, false, Some(v)) = (files, extism.wasi, t.get("filesystem")) {
            return Err(v.error(
                "an Extism plug-in reaches files only through WASI: add [extism] wasi = true",
            ));
        }
    }
    t.finish_ref()?;
    Ok(Permissions {
        kv,
        secrets,
        calls,
        network,
        filesystem,
    })
}

fn network(t: &Table<'_, '_>) -> Result<Network, TomlError> {
    let enabled = match t.get("enabled") {
        Some(v) => v.as_bool()?,
        None => false,
    };
    let hosts_v = t.get("allowed_hosts");
    let allowed_hosts: Vec<AllowedHost> = match &hosts_v {
        Some(v) => {
            capped(v)?;
            v.parse_list()?
        }
        None => Vec::new(),
    };
    let mut allowed_ports: Vec<u16> = Vec::new();
    if let Some(v) = t.get("allowed_ports") {
        for p in capped(&v)? {
            let n = p.as_u64()?;
            let port = u16::try_from(n)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| p.error("port must be from 1 to 65535"))?;
            if allowed_ports.contains(&port) {
                return Err(p.error(format!("duplicate port {port}")));
            }
            allowed_ports.push(port);
        }
    }
    if enabled && allowed_hosts.is_empty() {
        let at = hosts_v
            .as_ref()
            .map(|v| v.error(""))
            .unwrap_or_else(|| t.error(""));
        return Err(TomlError {
            key: format!("{}.allowed_hosts", t.path()),
            line: at.line,
            message: "network.enabled = true needs at least one allowed host (\"*\" means any public host)".into(),
        });
    }
    if !enabled && (!allowed_hosts.is_empty() || !allowed_ports.is_empty()) {
        return Err(t.error("allowed_hosts/allowed_ports are set but network.enabled is not true"));
    }
    t.finish_ref()?;
    Ok(Network {
        enabled,
        allowed_hosts,
        allowed_ports,
    })
}

fn filesystem(t: &Table<'_, '_>) -> Result<Filesystem, TomlError> {
    let mut seen: Vec<GuestPath> = Vec::new();
    let mut read = |key: &str, readonly: bool| -> Result<Vec<GuestPath>, TomlError> {
        let Some(v) = t.get(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in capped(&v)? {
            let p: GuestPath = item.parse()?;
            if let Some(other) = seen.iter().find(|o| o.overlaps(&p)) {
                return Err(item.error(format!(
                    "{p} overlaps {other}; mounts may not repeat or nest"
                )));
            }
            if !readonly && p.as_str() == ASSETS_GUEST_PATH {
                return Err(item.error(
                    "/assets is the bundle's own read-only folder; list it in readonly_paths",
                ));
            }
            seen.push(p.clone());
            out.push(p);
        }
        Ok(out)
    };
    let paths = read("paths", false)?;
    let readonly_paths = read("readonly_paths", true)?;
    t.finish_ref()?;
    Ok(Filesystem {
        paths,
        readonly_paths,
    })
}

fn positive<T: PartialEq + Default>(v: &Value<'_, '_>, x: T, what: &str) -> Result<T, TomlError> {
    if x == T::default() {
        Err(v.error(format!("{what} must be greater than zero")))
    } else {
        Ok(x)
    }
}

fn limits(t: &Table<'_, '_>) -> Result<RequestedLimits, TomlError> {
    let mut l = RequestedLimits::default();
    if let Some(v) = t.get("profile") {
        l.profile = Some(v.parse::<Profile>()?);
    }
    if let Some(v) = t.get("max_memory") {
        l.max_memory = Some(ByteSize(positive(
            &v,
            v.parse::<ByteSize>()?.0,
            "max_memory",
        )?));
    }
    if let Some(v) = t.get("max_execution_time") {
        let d = v.parse::<Span>()?.as_duration();
        l.max_execution_time = Some(positive::<Duration>(&v, d, "max_execution_time")?);
    }
    if let Some(v) = t.get("max_concurrent_calls") {
        let n = u32::try_from(v.as_u64()?).map_err(|_| v.error("too large"))?;
        l.max_concurrent_calls = Some(positive(&v, n, "max_concurrent_calls")?);
    }
    if let Some(v) = t.get("max_fuel") {
        l.max_fuel = Some(v.as_u64()?);
    }
    if let Some(v) = t.get("max_request_bytes") {
        l.max_request_bytes = Some(v.parse()?);
    }
    if let Some(v) = t.get("max_response_bytes") {
        l.max_response_bytes = Some(v.parse()?);
    }
    t.finish_ref()?;
    Ok(l)
}
