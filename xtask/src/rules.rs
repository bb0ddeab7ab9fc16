//! The architectural rules, as data: change them here, the checks read nothing else.
//! Source: the target crate map (`ARCHITECTURE.md`, "Code map").
//!
//! A crate pattern is an exact package name, or a prefix ending in `*` (`wasmtime*`).

/// Crates that parse or decide (no engine, no database).
const PARSE_AND_POLICY: &[&str] = &[
    "warden-manifest",
    "warden-bundle",
    "warden-trust",
    "warden-call",
    "warden-audit",
    "warden-net",
    "warden-fs",
    "warden-kv",
    "warden-secrets",
    "warden-datadir",
    "warden-registry",
];

const ENGINE_AND_DATABASE: &[&str] = &[
    "wasmtime*",
    "cranelift*",
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "deadpool-postgres",
    "sqlx",
    "object_store",
];

/// `crates` must not depend, through normal or build dependencies (transitively), on any of
/// `deps`. Dev-dependencies are free: tests may use anything.
pub struct Forbidden {
    pub crates: &'static [&'static str],
    pub deps: &'static [&'static str],
}

pub const FORBIDDEN: &[Forbidden] = &[
    Forbidden {
        crates: PARSE_AND_POLICY,
        deps: ENGINE_AND_DATABASE,
    },
    // The runtime runs guests: it neither writes the audit log nor opens the database.
    Forbidden {
        crates: &["warden-runtime"],
        deps: &[
            "warden-audit",
            "warden-store-*",
            "rusqlite",
            "libsqlite3-sys",
            "tokio-postgres",
            "deadpool-postgres",
            "sqlx",
        ],
    },
    // Shared storage is chosen by the binary (`warden-cli`), the only crate that may depend on
    // `warden-store-pg`, the only one that talks to PostgreSQL: the host, the service and every
    // embedder build without a PostgreSQL client.
    Forbidden {
        crates: &[
            "warden-host",
            "warden-serve",
            "warden-store-sqlite",
            "warden-codecache",
        ],
        deps: &[
            "warden-store-pg",
            "tokio-postgres",
            "deadpool-postgres",
            "sqlx",
            "object_store",
        ],
    },
    // The embedding API compiles no shared-storage client: the CLI builds shared storage and
    // hands it to the host, so embedders never compile S3 (issue 12).
    Forbidden {
        crates: &["warden-host"],
        deps: &["warden-store-s3", "object_store"],
    },
];

/// At most one version of each of these in the resolved graph (two would mean two engines
/// compiled, and types that do not match across them).
pub const SINGLE_VERSION: &[&str] = &[
    "wasmtime",
    "wasmtime-wasi",
    "wasmtime-wasi-http",
    "cranelift-codegen",
];

/// The only workspace crates that may contain `unsafe` or weaken the `unsafe_code` lint:
/// `warden-codecache` (its one block loads compiled code whose MAC was just checked in
/// memory) and the future OS sandbox.
pub const UNSAFE_ALLOWED: &[&str] = &["warden-codecache", "warden-sandbox"];

/// Where a crate's Rust sources are scanned for `unsafe` (relative to its manifest dir), plus
/// `build.rs`.
pub const SOURCE_DIRS: &[&str] = &["src", "tests", "benches", "examples"];

/// Lint levels that weaken the workspace's `unsafe_code = "deny"` when given in an attribute.
pub const LINT_WEAKENERS: &[&str] = &["allow", "expect", "warn"];

/// Hostile fixtures live in the first of these folders that exists (the second is where they
/// were before the move).
pub const FIXTURE_DIRS: &[&str] = &["tests/guests", "examples"];
pub const FIXTURE_PREFIX: &str = "hostile";

/// Where a fixture's test may be: these folders of every workspace crate but the ones listed
/// (xtask's own tests name fixtures only as examples).
pub const FIXTURE_TEST_DIRS: &[&str] = &["src", "tests"];
pub const FIXTURE_TEST_SKIP: &[&str] = &["xtask"];

/// The code map in ARCHITECTURE.md: its heading and table header.
pub const CODE_MAP_FILE: &str = "ARCHITECTURE.md";
pub const CODE_MAP_HEADING: &str = "## Code map";
pub const CODE_MAP_HEADER: &str = "| crate | path | what it does | depends on |";

/// Does `name` match a pattern (exact, or a prefix ending in `*`)?
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}
