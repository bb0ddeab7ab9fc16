#![allow(clippy::unwrap_used, clippy::expect_used)]
//! requested ∩ granted ∩ policy, checked exhaustively over grant subsets and policy subsets.

use warden_manifest::{
    ByteSize, Capability, Effective, EffectiveError, Grant, GrantItem, Manifest, MountSource,
    Policy, effective,
};

const MANIFEST: &str = r#"schema = 1
[extension]
id = "acme.app"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
[permissions]
kv = true
secrets = ["TOKEN", "OTHER"]
calls = ["acme.pdf"]
[permissions.network]
enabled = true
allowed_hosts = ["api.acme.com", "*.cdn.acme.com"]
[permissions.filesystem]
paths = ["/data"]
readonly_paths = ["/assets"]
"#;

fn manifest() -> Manifest {
    Manifest::parse(MANIFEST).unwrap()
}

fn all_items() -> Vec<GrantItem> {
    [
        "kv",
        "network",
        "filesystem",
        "secrets",
        "calls",
        "network:api.acme.com",
        "network:*.cdn.acme.com",
        "fs:/data",
        "fs:/assets",
        "secret:TOKEN",
        "secret:OTHER",
        "call:acme.pdf",
    ]
    .iter()
    .map(|s| match s.parse::<Grant>().unwrap() {
        Grant::List(mut v) => v.remove(0),
        _ => unreachable!(),
    })
    .collect()
}

/// Every granted thing must be requested, granted (directly or by its whole capability) and
/// allowed by the policy; and everything that satisfies all three must be granted.
fn check(m: &Manifest, items: &[GrantItem], policy: &Policy, eff: &Effective) {
    let req = &m.permissions;
    let ok = |c: Capability, i: Option<GrantItem>| {
        policy.capabilities.contains(&c)
            && (items.contains(&GrantItem::All(c)) || i.is_some_and(|i| items.contains(&i)))
    };
    assert_eq!(eff.kv, req.kv && ok(Capability::Kv, None));
    for s in &req.secrets {
        assert_eq!(
            eff.secrets.contains(s),
            ok(Capability::Secrets, Some(GrantItem::Secret(s.clone()))),
            "{s}"
        );
    }
    assert!(eff.secrets.iter().all(|s| req.secrets.contains(s)));
    for c in &req.calls {
        assert_eq!(
            eff.calls.contains(c),
            ok(Capability::Calls, Some(GrantItem::Call(c.clone())))
        );
    }
    let hosts = eff
        .network
        .as_ref()
        .map(|n| n.allowed_hosts.clone())
        .unwrap_or_default();
    for h in &req.network.allowed_hosts {
        assert_eq!(
            hosts.contains(h),
            ok(Capability::Network, Some(GrantItem::Host(h.clone()))),
            "{h}"
        );
    }
    assert!(
        eff.network
            .as_ref()
            .is_none_or(|n| !n.allowed_hosts.is_empty())
    );
    let paths = req
        .filesystem
        .paths
        .iter()
        .chain(&req.filesystem.readonly_paths);
    for p in paths {
        let granted = eff.mounts.iter().any(|mt| &mt.guest == p);
        assert_eq!(
            granted,
            ok(Capability::Filesystem, Some(GrantItem::Path(p.clone()))),
            "{p}"
        );
    }
    for mt in &eff.mounts {
        assert_eq!(
            mt.readonly,
            req.filesystem.readonly_paths.contains(&mt.guest)
        );
        assert_eq!(
            mt.source == MountSource::Assets,
            mt.guest.as_str() == "/assets"
        );
    }
}

#[test]
fn exhaustive_intersection() {
    let m = manifest();
    let items = all_items();
    let mut cases = 0;
    for policy_mask in 0u32..(1 << Capability::ALL.len()) {
        let policy = Policy {
            capabilities: Capability::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| policy_mask & (1 << i) != 0)
                .map(|(_, c)| *c)
                .collect(),
            ..Policy::default()
        };
        for grant_mask in 0u32..(1 << items.len()) {
            let chosen: Vec<GrantItem> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| grant_mask & (1 << i) != 0)
                .map(|(_, g)| g.clone())
                .collect();
            let eff = effective(&m, &Grant::List(chosen.clone()), &policy).unwrap();
            check(&m, &chosen, &policy, &eff);
            cases += 1;
        }
    }
    assert_eq!(cases, 32 * 4096);
}

#[test]
fn none_denies_all_and_all_grants_what_policy_allows() {
    let m = manifest();
    let eff = effective(&m, &Grant::None, &Policy::default()).unwrap();
    assert!(eff.is_empty());
    let eff = effective(&m, &Grant::default(), &Policy::default()).unwrap();
    assert!(eff.is_empty(), "the default grant must deny");
    let eff = effective(&m, &Grant::All, &Policy::default()).unwrap();
    assert!(eff.kv && eff.secrets.len() == 2 && eff.calls.len() == 1 && eff.mounts.len() == 2);
    assert_eq!(eff.network.unwrap().allowed_hosts.len(), 2);
    let no_net = Policy {
        capabilities: vec![Capability::Kv],
        ..Policy::default()
    };
    let eff = effective(&m, &Grant::All, &no_net).unwrap();
    assert!(eff.kv && eff.network.is_none() && eff.mounts.is_empty() && eff.secrets.is_empty());
}

#[test]
fn grants_must_name_requested_things() {
    let m = manifest();
    for g in [
        "network:evil.com",
        "secret:ROOT",
        "call:acme.other",
        "fs:/etc",
    ] {
        let e = effective(&m, &g.parse().unwrap(), &Policy::default()).unwrap_err();
        assert!(matches!(e, EffectiveError::NotRequested(_)), "{g}: {e}");
    }
    let bare = Manifest::parse(&MANIFEST.replace("kv = true", "kv = false")).unwrap();
    assert!(effective(&bare, &"kv".parse().unwrap(), &Policy::default()).is_err());
    for bad in [
        "root",
        "network:",
        "fs:relative",
        "secret:A-B",
        "call:x",
        "kv,bogus",
    ] {
        assert!(bad.parse::<Grant>().is_err(), "{bad}");
    }
}

#[test]
fn limits_above_ceiling_fail_naming_the_limit() {
    let big = MANIFEST.to_string() + "[limits]\nmax_memory = \"512MiB\"\n";
    let e = effective(
        &Manifest::parse(&big).unwrap(),
        &Grant::None,
        &Policy::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "limits.max_memory = 512MiB is above the operator's ceiling of 256MiB"
    );
    let strict_policy = Policy::parse("[policy]\nmax_execution_time = \"2s\"\n").unwrap();
    // The standard profile's 5s is itself above a 2s ceiling.
    let e = effective(&manifest(), &Grant::None, &strict_policy).unwrap_err();
    assert!(e.to_string().contains("max_execution_time"), "{e}");
    let strict = MANIFEST.to_string() + "[limits]\nprofile = \"strict\"\n";
    let eff = effective(
        &Manifest::parse(&strict).unwrap(),
        &Grant::None,
        &strict_policy,
    )
    .unwrap();
    assert_eq!(eff.limits.max_memory, ByteSize::mib(16));
    let fuel_policy = Policy::parse("[policy]\nmax_fuel = 1000\n").unwrap();
    let e = effective(&manifest(), &Grant::None, &fuel_policy).unwrap_err();
    assert!(e.to_string().contains("max_fuel"), "{e}");
    let relaxed_default = Policy::parse("[policy]\nprofile = \"relaxed\"\n").unwrap();
    let eff = effective(&manifest(), &Grant::None, &relaxed_default).unwrap();
    assert_eq!(eff.limits.max_memory, ByteSize::mib(256));
}
