//! Builds real signed bundles from the example guests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use warden_bundle::{Bundle, BundleLimits, pack_dir};
use warden_host::{
    CallFailure, ExtensionId, Grant, Host, MemoryAudit, Policy, Resolver, TrustBundle,
};
use warden_trust::{SigningKey, publisher_entry, sign};

/// The folder of guest NAME: an example (examples/) or a hostile test fixture (tests/guests/).
pub fn guest(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixture = root.join("tests/guests").join(name);
    if fixture.is_dir() {
        fixture
    } else {
        root.join("examples").join(name)
    }
}

/// A temporary workspace with one publisher key, bundles signed by it, and a host trusting it.
pub struct Lab {
    pub dir: TempDir,
    key: SigningKey,
    pub audit: Arc<MemoryAudit>,
    pub host: Host,
    trust: String,
}

impl Lab {
    /// The `call` record of `request_id`, once written (a stopped call's is written after
    /// its caller has gone); fails after 5 s.
    pub async fn call_record(&self, request_id: &str) -> warden_audit::Record {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found =
                self.audit.records().into_iter().find(|r| {
                    r.request_id() == request_id && r.event() == warden_audit::Event::Call
                });
            if let Some(r) = found {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no record of {request_id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn new() -> Lab {
        Lab::with_policy(Policy::default())
    }

    pub fn with_policy(policy: Policy) -> Lab {
        Lab::with_resolver(policy, None)
    }

    /// A lab whose host resolves names with `resolver` (default: the system's).
    pub fn with_resolver(policy: Policy, resolver: Option<Arc<dyn Resolver>>) -> Lab {
        Lab::with_builder(policy, |b| match resolver {
            Some(r) => b.resolver(r),
            None => b,
        })
    }

    /// A lab whose host builder is finished by `finish` (after trust, policy, data dir, audit).
    pub fn with_builder(
        policy: Policy,
        finish: impl FnOnce(warden_host::HostBuilder) -> warden_host::HostBuilder,
    ) -> Lab {
        let dir = TempDir::new().unwrap();
        let key = SigningKey::generate();
        let trust_text = publisher_entry(&"warden-examples".parse().unwrap(), &key.public_key());
        let trust = TrustBundle::parse(&trust_text).unwrap();
        let audit = Arc::new(MemoryAudit::default());
        let builder = Host::builder()
            .trust(trust)
            .policy(policy)
            .data_dir(dir.path().join("data"))
            .audit(audit.clone());
        let host = finish(builder).build().unwrap();
        Lab {
            dir,
            key,
            audit,
            host,
            trust: trust_text,
        }
    }

    /// The trust bundle's text (one `[[publisher]]` entry for `warden-examples`).
    pub fn trust_text(&self) -> &str {
        &self.trust
    }

    /// Another host on the same data dir, as after a restart.
    pub fn restarted_host(&self) -> Host {
        Host::builder()
            .trust(TrustBundle::parse(&self.trust).unwrap())
            .data_dir(self.dir.path().join("data"))
            .audit(Arc::new(MemoryAudit::default()))
            .build()
            .unwrap()
    }

    /// Packs examples/NAME (with `edit` applied to its manifest) and signs it; returns the path.
    pub fn bundle(&self, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let src = guest(name);
        let wasm = src.join("extension.wasm");
        assert!(
            wasm.exists(),
            "{} is missing: run scripts/build-examples.sh",
            wasm.display()
        );
        let manifest = edit(fs::read_to_string(src.join("extension.toml")).unwrap());
        let stage = self.dir.path().join(format!("stage-{}", self.count()));
        fs::create_dir_all(&stage).unwrap();
        fs::write(stage.join("extension.toml"), manifest).unwrap();
        fs::copy(&wasm, stage.join("extension.wasm")).unwrap();
        if src.join("assets").is_dir() {
            copy_tree(&src.join("assets"), &stage.join("assets"));
        }
        self.sign_dir(&stage)
    }

    /// Packs the folder `stage` as it is and signs it; returns the bundle's path.
    pub fn sign_dir(&self, stage: &Path) -> PathBuf {
        let packed = pack_dir(stage, &BundleLimits::default()).unwrap();
        let out = self.dir.path().join(format!("b{}.wext", self.count()));
        fs::write(&out, &packed.bytes).unwrap();
        let bundle = Bundle::read_file(&out, &BundleLimits::default()).unwrap();
        let env = sign(&bundle, &self.key, None).unwrap();
        fs::write(format!("{}.sig", out.display()), env.to_json_pretty()).unwrap();
        out
    }

    fn count(&self) -> usize {
        fs::read_dir(self.dir.path()).unwrap().count()
    }

    /// Loads examples/NAME as is, granting nothing.
    pub fn load(&self, name: &str) -> warden_host::ExtensionId {
        self.load_edited(name, |m| m)
    }

    pub fn load_edited(
        &self,
        name: &str,
        edit: impl Fn(String) -> String,
    ) -> warden_host::ExtensionId {
        self.load_granted(name, edit, &Grant::None)
    }

    /// Loads examples/NAME with `edit` applied to its manifest and `grant` given.
    pub fn load_granted(
        &self,
        name: &str,
        edit: impl Fn(String) -> String,
        grant: &Grant,
    ) -> warden_host::ExtensionId {
        let path = self.bundle(name, edit);
        self.host
            .default_tenant()
            .load_file(&path, None, grant)
            .unwrap()
            .id
    }

    /// An rpc call for the `default` tenant; the value only.
    pub async fn call(
        &self,
        id: &ExtensionId,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CallFailure> {
        call(&self.host, id, method, input).await
    }

    /// An http call for the `default` tenant; the response only.
    pub async fn call_http(
        &self,
        id: &ExtensionId,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, CallFailure> {
        self.host
            .default_tenant()
            .call_http(id, request)
            .await
            .map(|c| c.value)
    }
}

/// An rpc call on `host` for the `default` tenant; the value only.
pub async fn call(
    host: &Host,
    id: &ExtensionId,
    method: &str,
    input: &[u8],
) -> Result<Vec<u8>, CallFailure> {
    host.default_tenant()
        .call(id, method, input)
        .await
        .map(|c| c.value)
}

/// Copies the regular files and folders under `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
