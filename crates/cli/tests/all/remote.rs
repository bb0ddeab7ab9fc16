//! `warden run` and `warden inspect` on a remote extension (`kind = "remote"`), against TLS
//! servers on loopback that this test starts with its own certificates.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use warden_remote::testing::{Behaviour, Ca, Leaf, leaf, server};

use crate::foundation::{fails, keygen, ok, pack, sign, trust_file, warden};

struct Setup {
    _t: tempfile::TempDir,
    root: PathBuf,
    trust: PathBuf,
    key: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::TempDir::new().unwrap();
    let root = t.path().to_path_buf();
    let p = keygen(&root, "vendor");
    let trust = trust_file(&root, "trust.toml", &[("vendor", &[&p.pem], &[])]);
    Setup {
        trust,
        key: p.key,
        root,
        _t: t,
    }
}

/// A signed bundle for `https://127.0.0.1:PORT/rpc` pinning `pin`.
fn bundle(s: &Setup, name: &str, addr: SocketAddr, pin: &Leaf) -> PathBuf {
    let dir = s.root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("extension.toml"),
        format!(
            "schema = 1\n\n[extension]\nid = \"vendor.{name}\"\nversion = \"1.0.0\"\n\
             publisher = \"vendor\"\nkind = \"remote\"\nentry = \"https://127.0.0.1:{}/rpc\"\n\n\
             [[methods]]\nname = \"echo\"\n\n[remote]\npins = [\"{}\"]\n",
            addr.port(),
            pin.pin
        ),
    )
    .unwrap();
    let out = s.root.join(format!("{name}.wext"));
    pack(&dir, &out);
    sign(&out, &s.key);
    out
}

/// The operator's config: loopback reachable, these ports named.
fn config(s: &Setup, addrs: &[SocketAddr]) -> PathBuf {
    let hosts: Vec<String> = addrs
        .iter()
        .map(|a| format!("\"127.0.0.1:{}\"", a.port()))
        .collect();
    let path = s.root.join("config.toml");
    fs::write(
        &path,
        format!(
            "[policy]\nallow_networks = [\"127.0.0.0/8\"]\n\n[policy.remote]\nallowed_hosts = [{}]\n",
            hosts.join(", ")
        ),
    )
    .unwrap();
    path
}

fn run(
    s: &Setup,
    bundle: &Path,
    config: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> std::process::Output {
    let data = s.root.join("data");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"run",
        &bundle,
        &"--trust",
        &s.trust,
        &"--data",
        &data,
        &"--config",
        &config,
        &"--call",
        &"echo",
        &"--input",
        &"hello",
    ];
    args.extend_from_slice(extra);
    warden(&args)
}

#[test]
fn warden_run_calls_a_pinned_remote_and_refuses_an_unpinned_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    let good = leaf(&["127.0.0.1"], None, false, false);
    let imposter = leaf(&["127.0.0.1"], None, false, false);
    let clients = Ca::new("Operator client CA");
    let (ok_addr, bad_addr, mtls_addr) = rt.block_on(async {
        (
            server(&good, None, Behaviour::Answer).await,
            server(&imposter, None, Behaviour::Answer).await,
            server(&good, Some(&clients), Behaviour::Answer).await,
        )
    });
    let config = config(&s, &[ok_addr, bad_addr, mtls_addr]);
    let b = bundle(&s, "echo", ok_addr, &good);
    assert_eq!(ok(&run(&s, &b, &config, &[])).trim(), "hello");
    // A server with another key, pinned to `good`: refused, and the denial audited.
    let b = bundle(&s, "imposter", bad_addr, &good);
    fails(&run(&s, &b, &config, &[]), "not pinned");
    let audit = ok(&warden(&[
        &"audit",
        &"--data",
        &s.root.join("data"),
        &"--json",
    ]));
    let denial = audit
        .lines()
        .find(|l| l.contains(r#""event":"denial""#) && l.contains(&imposter.pin.to_string()))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(denial.contains("remote:https://127.0.0.1"), "{denial}");
    // A server that wants the operator's client certificate.
    let b = bundle(&s, "mtls", mtls_addr, &good);
    fails(&run(&s, &b, &config, &[]), "refused");
    let issued = leaf(&["default.vendor.mtls"], Some(&clients), false, true);
    let cert = s.root.join("client.pem");
    let key = s.root.join("client.key");
    fs::write(&cert, &issued.cert).unwrap();
    fs::write(&key, &issued.key).unwrap();
    let out = run(
        &s,
        &b,
        &config,
        &[&"--client-cert", &cert, &"--client-key", &key],
    );
    assert_eq!(ok(&out).trim(), "hello");
    // `inspect` says where it goes, what it pins and whether the policy lets it.
    let shown = ok(&warden(&[&"inspect", &b, &"--config", &config]));
    assert!(
        shown.contains(&format!(
            "endpoint: https://127.0.0.1:{}/rpc",
            mtls_addr.port()
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("pinned key: {}", good.pin)),
        "{shown}"
    );
    assert!(shown.contains("allowed by the policy"), "{shown}");
    let shown = ok(&warden(&[&"inspect", &b]));
    assert!(shown.contains("REFUSED at load"), "{shown}");
    ok(&warden(&[
        &"audit",
        &"--data",
        &s.root.join("data"),
        &"--verify",
    ]));
}
