#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The manifest as users write it: the SPEC's full example, and each class of mistake with the
//! exact key and line the error must name.

use std::time::Duration;

use warden_manifest::{ByteSize, HostPattern, Kind, Manifest, Profile};

const FULL: &str = r#"schema = 1

[extension]
id = "acme.invoices"
version = "1.4.2"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
args = []
description = "Sync invoices"
ui = "ui"

[[endpoints]]
method = "GET"
path = "/invoices/{id}"

[[methods]]
name = "render"

[permissions]
kv = true
secrets = ["ACME_TOKEN"]
calls = ["acme.pdf"]

[permissions.network]
enabled = true
allowed_hosts = ["api.acme.com", "*.acme.com", "api.acme.com:8443", "https://api.acme.com", "10.20.0.5:5432"]
allowed_ports = []

[permissions.filesystem]
paths = ["/data"]
readonly_paths = ["/assets"]

[limits]
profile = "standard"
max_memory = "64MiB"
max_execution_time = "5s"
max_concurrent_calls = 16
max_fuel = 0
max_request_bytes = "5MiB"
max_response_bytes = "5MiB"
"#;

const MINIMAL: &str = r#"schema = 1
[extension]
id = "acme.hello"
version = "1.0.0"
publisher = "acme"
kind = "component"
entry = "extension.wasm"
"#;

#[test]
fn spec_example_parses() {
    let m = Manifest::parse(FULL).unwrap();
    assert_eq!(m.extension.id.as_str(), "acme.invoices");
    assert_eq!(m.extension.version.to_string(), "1.4.2");
    assert_eq!(m.extension.kind, Kind::Component);
    assert_eq!(m.extension.ui.as_ref().unwrap().as_str(), "ui");
    assert_eq!(m.endpoints.len(), 1);
    assert_eq!(m.methods[0].as_str(), "render");
    assert!(m.permissions.kv);
    assert_eq!(m.permissions.network.allowed_hosts.len(), 5);
    assert_eq!(
        m.permissions.network.allowed_hosts[1].host,
        HostPattern::Subdomains("acme.com".into())
    );
    assert_eq!(
        m.permissions.filesystem.readonly_paths[0].as_str(),
        "/assets"
    );
    let l = m.limits.resolve(Profile::Strict);
    assert_eq!(l.max_memory, ByteSize::mib(64));
    assert_eq!(l.max_execution_time, Duration::from_secs(5));
    assert_eq!(l.max_fuel, None);
}

#[test]
fn minimal_manifest_denies_everything() {
    let m = Manifest::parse(MINIMAL).unwrap();
    let p = &m.permissions;
    assert!(!p.kv && p.secrets.is_empty() && p.calls.is_empty());
    assert!(!p.network.enabled && p.network.allowed_hosts.is_empty());
    assert!(p.filesystem.paths.is_empty() && p.filesystem.readonly_paths.is_empty());
    assert_eq!(
        m.limits.resolve(Profile::Standard),
        Profile::Standard.preset()
    );
}

/// Appends `extra` to the minimal manifest and expects an error at `key` on `line`.
#[track_caller]
fn rejects(extra: &str, key: &str, line: usize, needle: &str) {
    let text = format!("{MINIMAL}{extra}");
    let e = Manifest::parse(&text).expect_err(&format!("should reject:\n{text}"));
    assert_eq!((e.key.as_str(), e.line), (key, line), "{e}\n---\n{text}");
    assert!(e.to_string().contains(needle), "{e:?} lacks {needle:?}");
}

#[test]
fn mistakes_name_key_and_line() {
    // Line 8 is the first line after MINIMAL.
    rejects("colour = \"red\"\n", "extension.colour", 8, "unknown key");
    rejects(
        "[permissions]\nkvv = true\n",
        "permissions.kvv",
        9,
        "unknown key",
    );
    rejects(
        "[permissions]\nkv = \"yes\"\n",
        "permissions.kv",
        9,
        "expected a boolean",
    );
    rejects(
        "[limits]\nmax_memory = \"64 MB\"\n",
        "limits.max_memory",
        9,
        "invalid value",
    );
    rejects(
        "[limits]\nmax_memory = \"64\"\n",
        "limits.max_memory",
        9,
        "needs a unit",
    );
    rejects(
        "[limits]\nmax_memory = \"0B\"\n",
        "limits.max_memory",
        9,
        "greater than zero",
    );
    rejects(
        "[limits]\nmax_memory = 64\n",
        "limits.max_memory",
        9,
        "expected a string",
    );
    rejects(
        "[limits]\nmax_execution_time = \"5 seconds\"\n",
        "limits.max_execution_time",
        9,
        "invalid value",
    );
    rejects(
        "[limits]\nmax_concurrent_calls = -1\n",
        "limits.max_concurrent_calls",
        9,
        "non-negative",
    );
    rejects(
        "[limits]\nmax_concurrent_calls = 0\n",
        "limits.max_concurrent_calls",
        9,
        "greater than zero",
    );
    rejects(
        "[limits]\nprofile = \"lax\"\n",
        "limits.profile",
        9,
        "strict",
    );
    rejects(
        "[permissions.network]\nenabled = true\n",
        "permissions.network.allowed_hosts",
        8,
        "at least one allowed host",
    );
    rejects(
        "[permissions.network]\nenabled = true\nallowed_hosts = []\n",
        "permissions.network.allowed_hosts",
        10,
        "at least one allowed host",
    );
    rejects(
        "[permissions.network]\nenabled = true\nallowed_hosts = [\"a.com\", \"evil.com.\"]\n",
        "permissions.network.allowed_hosts[1]",
        10,
        "trailing dot",
    );
    rejects(
        "[permissions.network]\nenabled = true\nallowed_hosts = [\"a.com\", \"a.com\"]\n",
        "permissions.network.allowed_hosts[1]",
        10,
        "duplicate",
    );
    rejects(
        "[permissions.network]\nallowed_hosts = [\"a.com\"]\n",
        "permissions.network",
        8,
        "not true",
    );
    rejects(
        "[permissions.network]\nenabled = true\nallowed_hosts = [\"a.com\"]\nallowed_ports = [0]\n",
        "permissions.network.allowed_ports[0]",
        11,
        "1 to 65535",
    );
    rejects(
        "[permissions.filesystem]\npaths = [\"data\"]\n",
        "permissions.filesystem.paths[0]",
        9,
        "absolute",
    );
    rejects(
        "[permissions.filesystem]\npaths = [\"/data/../etc\"]\n",
        "permissions.filesystem.paths[0]",
        9,
        "'..'",
    );
    rejects(
        "[permissions.filesystem]\npaths = [\"/data\"]\nreadonly_paths = [\"/data/x\"]\n",
        "permissions.filesystem.readonly_paths[0]",
        10,
        "overlaps",
    );
    rejects(
        "[permissions.filesystem]\npaths = [\"/assets\"]\n",
        "permissions.filesystem.paths[0]",
        9,
        "read-only",
    );
    rejects(
        "[permissions]\nsecrets = [\"A-B\"]\n",
        "permissions.secrets[0]",
        9,
        "secret name",
    );
    rejects(
        "[permissions]\ncalls = [\"acme.hello\"]\n",
        "permissions.calls",
        9,
        "itself",
    );
    rejects(
        "[[endpoints]]\nmethod = \"get\"\npath = \"/\"\n",
        "endpoints[0].method",
        9,
        "upper-case",
    );
    rejects(
        "[[endpoints]]\nmethod = \"GET\"\npath = \"/\"\n[[endpoints]]\nmethod = \"GET\"\npath = \"/\"\n",
        "endpoints[1].path",
        13,
        "duplicate endpoint",
    );
    rejects(
        "[[methods]]\nname = \"a\"\nextra = 1\n",
        "methods[0].extra",
        10,
        "unknown key",
    );
}

#[test]
fn extension_table_mistakes() {
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        (
            "id = \"acme.hello\"",
            "id = \"Acme\"",
            "extension.id",
            3,
            "invalid value",
        ),
        (
            "version = \"1.0.0\"",
            "version = \"1.0\"",
            "extension.version",
            4,
            "invalid value",
        ),
        (
            "version = \"1.0.0\"",
            "version = 1",
            "extension.version",
            4,
            "expected a string",
        ),
        (
            "publisher = \"acme\"",
            "publisher = \"../acme\"",
            "extension.publisher",
            5,
            "invalid value",
        ),
        (
            "kind = \"component\"",
            "kind = \"script\"",
            "extension.kind",
            6,
            "component",
        ),
        (
            "entry = \"extension.wasm\"",
            "entry = \"../outside.wasm\"",
            "extension.entry",
            7,
            "'..'",
        ),
        (
            "entry = \"extension.wasm\"",
            "entry = \"/abs.wasm\"",
            "extension.entry",
            7,
            "relative",
        ),
        (
            "entry = \"extension.wasm\"",
            "entry = \"a\\\\b.wasm\"",
            "extension.entry",
            7,
            "contains",
        ),
        (
            "entry = \"extension.wasm\"",
            "entry = \"assets/x.wasm\"",
            "extension.entry",
            7,
            "assets",
        ),
        (
            "entry = \"extension.wasm\"",
            "entry = \"extension.wasm\"\nargs = [\"-v\"]",
            "extension.args",
            8,
            "only for kind",
        ),
        (
            "schema = 1",
            "schema = 2",
            "schema",
            1,
            "unsupported schema",
        ),
        (
            "publisher = \"acme\"\n",
            "",
            "extension.publisher",
            2,
            "missing required key",
        ),
    ];
    for (from, to, key, line, needle) in cases {
        let text = MINIMAL.replacen(from, to, 1);
        let e = Manifest::parse(&text).expect_err(&text);
        assert_eq!((e.key.as_str(), e.line), (*key, *line), "{e}\n{text}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    }
}

#[test]
fn duplicate_keys_and_syntax_errors_carry_a_line() {
    let text = MINIMAL.replace(
        "kind = \"component\"",
        "kind = \"component\"\nkind = \"process\"",
    );
    let e = Manifest::parse(&text).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.to_string().contains("duplicate key"), "{e}");
    let e = Manifest::parse(&format!("{MINIMAL}[extension]\nid = \"x.y\"\n")).unwrap_err();
    assert!(e.line >= 8, "{e}");
    let e = Manifest::parse("schema = 1\n[extension\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(Manifest::parse("").is_err());
    assert!(Manifest::parse(&"x".repeat(2 * 1024 * 1024)).is_err());
}

#[test]
fn process_manifest_takes_args() {
    let text = MINIMAL.replace(
        "kind = \"component\"",
        "kind = \"process\"\nargs = [\"--serve\"]",
    );
    let m = Manifest::parse(&text).unwrap();
    assert_eq!(m.extension.kind, Kind::Process);
    assert_eq!(m.extension.args, vec!["--serve".to_string()]);
}

#[test]
fn extism_manifest_lists_methods_and_only_what_extism_can_use() {
    let base = "schema = 1\n[extension]\nid = \"a.b\"\nversion = \"1.0.0\"\npublisher = \"p\"\nkind = \"extism\"\nentry = \"p.wasm\"\n";
    let m = Manifest::parse(&format!(
        "{base}[[methods]]\nname = \"count_vowels\"\n[permissions]\nsecrets = [\"vowels\"]\n"
    ))
    .unwrap();
    assert_eq!(m.extension.kind, Kind::Extism);
    let e = Manifest::parse(base).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("extension.kind", 6), "{e}");
    assert!(e.to_string().contains("[[methods]]"), "{e}");
    for (extra, key) in [
        ("[permissions]\nkv = true\n", "permissions.kv"),
        ("[permissions]\ncalls = [\"c.d\"]\n", "permissions.calls"),
    ] {
        let e =
            Manifest::parse(&format!("{base}[[methods]]\nname = \"run\"\n{extra}")).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(
            e.to_string()
                .contains("Extism plug-in has no host function"),
            "{e}"
        );
    }
    // Files only through WASI.
    let files = "[permissions.filesystem]\npaths = [\"/data\"]\n";
    let e = Manifest::parse(&format!("{base}[[methods]]\nname = \"run\"\n{files}")).unwrap_err();
    assert_eq!(e.key, "permissions.filesystem", "{e}");
    assert!(e.to_string().contains("wasi = true"), "{e}");
    let m = Manifest::parse(&format!(
        "{base}[[methods]]\nname = \"run\"\n[extism]\nwasi = true\n{files}"
    ))
    .unwrap();
    assert_eq!(m.permissions.filesystem.paths.len(), 1);
    let e = Manifest::parse(&format!(
        "{base}[[methods]]\nname = \"run\"\n[[endpoints]]\nmethod = \"GET\"\npath = \"/\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("needs `call"), "{e}");
    let e =
        Manifest::parse(&base.replace("kind = \"extism\"", "kind = \"extism\"\nargs = [\"x\"]"))
            .unwrap_err();
    assert!(e.to_string().contains("args are only for"), "{e}");
}

#[test]
fn an_endpoint_may_call_a_listed_method() {
    let base = "schema = 1\n[extension]\nid = \"a.b\"\nversion = \"1.0.0\"\npublisher = \"p\"\nkind = \"component\"\nentry = \"e.wasm\"\n[[methods]]\nname = \"inc\"\n";
    let m = Manifest::parse(&format!(
        "{base}[[endpoints]]\nmethod = \"POST\"\npath = \"/inc\"\ncall = \"inc\"\n"
    ))
    .unwrap();
    assert_eq!(
        m.endpoints[0].call.as_ref().map(|c| c.as_str()),
        Some("inc")
    );
    let e = Manifest::parse(&format!(
        "{base}[[endpoints]]\nmethod = \"POST\"\npath = \"/x\"\ncall = \"nope\"\n"
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("not one of the manifest's [[methods]]"),
        "{e}"
    );
}

/// Build metadata is refused at parse (red team: `1.0.0+a` and `1.0.0+b` passed as two
/// versions, around the one-content-per-version rule, and ordered as an upgrade); a
/// pre-release is a version of its own and stays allowed.
#[test]
fn build_metadata_in_the_version_is_refused() {
    for bad in ["1.0.0+a", "1.0.0+build.5", "1.0.0-rc.1+b"] {
        let text = MINIMAL.replace("version = \"1.0.0\"", &format!("version = \"{bad}\""));
        let e = Manifest::parse(&text).expect_err(bad);
        assert_eq!((e.key.as_str(), e.line), ("extension.version", 4), "{e}");
        assert!(e.to_string().contains("build metadata"), "{e}");
    }
    let text = MINIMAL.replace("version = \"1.0.0\"", "version = \"1.0.0-rc.1\"");
    let m = Manifest::parse(&text).unwrap();
    assert_eq!(m.extension.version.to_string(), "1.0.0-rc.1");
}
