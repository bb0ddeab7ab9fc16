//! Subcommands. Each module turns parsed arguments into library calls and prints the result.

mod audit;
mod inspect;
mod keygen;
mod manage;
mod migrate;
mod new;
mod pack;
mod run;
mod serve;
mod sign;
mod verify;

pub use run::{Interrupted, UsageError};

/// The exit code of a command that could not take a lock another process held (for
/// `warden_datadir::LOCK_WAIT`): nothing was done or checked; try again (`EX_TEMPFAIL`). Not
/// 1: a monitoring job must not read "a stopped `warden` command" as "the log was edited".
pub const BUSY_EXIT: u8 = 75;

/// Whether `e` is a lock another process held past its bound (`TimedOut` anywhere in its
/// chain).
pub fn busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// warden: a secure host for untrusted extensions.
///
/// Extensions ship as signed, content-addressed bundles (.wext) that are verified before use.
#[derive(Parser)]
#[command(name = "warden", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A bundle and what it takes to verify it (shared by `verify` and `run`).
#[derive(clap::Args)]
struct Signed {
    #[arg(value_name = "FILE.wext")]
    bundle: PathBuf,
    /// Trust bundle (TOML with [[publisher]] entries).
    #[arg(long, value_name = "TRUST", env = "WARDEN_TRUST_BUNDLE")]
    trust: PathBuf,
    /// Signature file [default: FILE.wext.sig].
    #[arg(long, value_name = "SIG")]
    sig: Option<PathBuf>,
}

/// Where the audit key is (shared by every command that writes or verifies the audit log).
#[derive(clap::Args)]
struct AuditKeyArg {
    /// The audit key: the MAC over the audit log's head [default: DATA/audit.key, created on
    /// first use]. Keep it outside the data dir: then someone who can write the data dir cannot
    /// write a head for a log they cut. Putting back an older genuine head (with the log cut to
    /// it) is caught only by a checkpoint kept elsewhere (`warden audit --checkpoint`).
    #[arg(long = "audit-key", value_name = "FILE", env = "WARDEN_AUDIT_KEY")]
    audit_key: Option<PathBuf>,
}

/// The data dir a management command works on.
#[derive(clap::Args)]
struct PlaceArgs {
    /// Data folder: registry, blobs, audit log.
    #[arg(long, value_name = "DIR", default_value = "./warden-data")]
    data: PathBuf,
    /// Operator config file ([policy] ceilings, profile, allowed capabilities; [storage]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    key: AuditKeyArg,
}

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant and print its API key (shown once; only its hash is stored).
    Create {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        place: PlaceArgs,
    },
}

// Parsed once per process: the size of the largest variant (`run`) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create an Ed25519 signing key for a publisher.
    ///
    /// Writes DIR/NAME.key (private, mode 0600, never overwritten) and DIR/NAME.pub, and prints
    /// the [[publisher]] entry to add to a trust bundle.
    Keygen {
        /// Publisher name: lowercase letters, digits and '-'.
        #[arg(long, value_name = "NAME")]
        publisher: String,
        /// Folder to write the key files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Create a new extension folder NAME that builds, packs and runs as it is.
    ///
    /// Writes NAME/ (refused if it exists and is not empty): extension.toml (asking for no
    /// permissions), the source, wit/, build.sh and a README.md whose commands build, sign and
    /// run it. The publisher is a placeholder to change. Prints the next steps.
    New {
        /// The extension's name (its folder and the last label of its id): a-z, 0-9 and '-',
        /// starting with a letter.
        #[arg(value_name = "NAME")]
        name: new::Name,
        /// The language of the source.
        #[arg(long, value_name = "LANG")]
        lang: new::Lang,
        /// http: answers HTTP requests (wasi:http/incoming-handler); rpc: answers calls of its
        /// methods (warden:extension/handler).
        #[arg(long, value_name = "WORLD")]
        world: new::World,
        /// The folder to create NAME in [default: the current folder].
        #[arg(long = "dir", value_name = "PARENT")]
        dir: Option<PathBuf>,
    },
    /// Pack an extension folder into a canonical bundle.
    ///
    /// Validates extension.toml, then packs it with the entry file and the assets/ and ui
    /// folders. The same folder always gives the same bytes. Prints the content hash.
    Pack {
        /// Folder holding extension.toml.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Bundle file to write.
        #[arg(long, value_name = "FILE.wext")]
        out: PathBuf,
    },
    /// Sign a bundle with a publisher key (DSSE envelope, Ed25519).
    ///
    /// If SIG already holds signatures for this same bundle, the new one is added to them.
    Sign {
        #[arg(value_name = "FILE.wext")]
        bundle: PathBuf,
        /// Private key in PEM (PKCS#8), e.g. from `warden keygen` or `openssl genpkey -algorithm ed25519`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Signature file to write [default: FILE.wext.sig].
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
    },
    /// Verify a bundle's signature against a trust bundle and show what it may do.
    ///
    /// A failure is recorded in the audit log of the data dir given with --data, or of
    /// ./warden-data if it already holds one (verify never creates a data dir).
    Verify {
        #[command(flatten)]
        signed: Signed,
        /// Data dir whose audit log records a failed verification.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Operator config file ([storage]: where the audit log is).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        key: AuditKeyArg,
    },
    /// Show a bundle's manifest, permissions, hash and component interfaces (NOT verified).
    Inspect {
        #[arg(value_name = "FILE.wext")]
        bundle: PathBuf,
        /// Show what each import of the component gives under this grant (`all`, `none`, or
        /// a list as for `install`) before it is installed [default: none].
        #[arg(long, value_name = "all|none|LIST")]
        grant: Option<String>,
        /// The operator config whose policy applies [default: the default policy].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Verify a bundle, load it with the grant and policy, and invoke it once.
    ///
    /// rpc extensions: --call METHOD [--input JSON]. http extensions: --http "METHOD PATH"
    /// [--header K:V]... [--body @FILE]. Prints the result; exits 1 on a trap, timeout, limit or
    /// denial. Every call is audited in DATA/audit.
    #[command(group(clap::ArgGroup::new("invocation").required(true).args(["call", "http"])))]
    Run {
        #[command(flatten)]
        signed: Signed,
        /// Data folder: audit log and compile cache.
        #[arg(long, value_name = "DIR", default_value = "./warden-data")]
        data: PathBuf,
        #[command(flatten)]
        key: AuditKeyArg,
        /// Operator config file ([policy] ceilings, profile, allowed capabilities; [storage]).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// What the operator grants: all, none, or a list like kv,secret:TOKEN,network:api.acme.com.
        #[arg(long, value_name = "all|none|LIST", default_value = "none")]
        grant: String,
        /// A secret for this run only, NAME=VALUE or NAME=@FILE (repeatable; never echoed or
        /// stored). Prefer @FILE: other local users can see command lines.
        #[arg(long, value_name = "NAME=VALUE")]
        secret: Vec<String>,
        /// A remote extension: the client certificate (PEM, leaf first) it presents to its
        /// server, for this run only.
        #[arg(long, value_name = "FILE", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// rpc: the method to call.
        #[arg(long, value_name = "METHOD")]
        call: Option<String>,
        /// rpc: the input (JSON by convention), or @FILE.
        #[arg(long, value_name = "JSON", requires = "call")]
        input: Option<String>,
        /// http: "METHOD PATH", e.g. "GET /hello".
        #[arg(long, value_name = "METHOD PATH")]
        http: Option<String>,
        /// http: a request header, K:V (repeatable).
        #[arg(long, value_name = "K:V", requires = "http")]
        header: Vec<String>,
        /// http: the request body, @FILE or text.
        #[arg(long, value_name = "@FILE", requires = "http")]
        body: Option<String>,
    },
    /// Serve what is installed: the gateway, the runner API and the admin API.
    ///
    /// Tokens: WARDEN_ADMIN_TOKEN / --admin-token-file (no token: no admin API) and
    /// WARDEN_RUNNER_TOKEN / --runner-token-file (no token: no runner API). Never on the
    /// command line. SIGHUP reads the trust bundle again; SIGTERM/SIGINT finish calls in
    /// flight and stop.
    Serve {
        #[command(flatten)]
        place: PlaceArgs,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Trust bundle (publishers whose signatures are accepted) [env: WARDEN_TRUST_BUNDLE].
        #[arg(long, value_name = "TRUST", env = "WARDEN_TRUST_BUNDLE")]
        trust: Option<PathBuf>,
        /// File holding the admin token (mode 0600).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
        /// File holding the runner token (mode 0600).
        #[arg(long, value_name = "FILE")]
        runner_token_file: Option<PathBuf>,
    },
    /// Manage tenants: `warden tenant create NAME` prints the new tenant's API key once.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Verify a bundle and install (or upgrade) it for a tenant, with the operator's grant.
    ///
    /// The grant approves what the manifest requests. Without --grant an upgrade keeps the
    /// installed version's grant, and is refused if it requests more than was approved. A
    /// lower version than the installed one is refused unless --force. Audited.
    Install {
        #[command(flatten)]
        signed: Signed,
        /// The tenant to install for (made with `warden tenant create`).
        #[arg(long, value_name = "NAME")]
        tenant: String,
        /// What the operator grants: all, none, or a list like kv,secret:TOKEN,network:api.acme.com
        /// [default: the installed version's grant, or none].
        #[arg(long, value_name = "all|none|LIST")]
        grant: Option<String>,
        /// Install a lower version than the installed one (a rollback).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// Remove a tenant's install of an extension; it stops being served at once. Audited.
    Uninstall {
        #[arg(value_name = "EXTENSION_ID")]
        extension: String,
        #[arg(long, value_name = "NAME")]
        tenant: String,
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// List installs: tenant, extension, version, content hash, grant.
    Installs {
        /// Only this tenant's.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
        #[command(flatten)]
        place: PlaceArgs,
    },
    /// Show or verify the audit log.
    Audit {
        /// Data folder holding audit/.
        #[arg(long, value_name = "DIR", default_value = "./warden-data")]
        data: PathBuf,
        /// Operator config file ([storage]: where the audit log is).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this tenant's records.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
        /// Only the records of this request id (the `x-request-id` of an answer), and of the
        /// calls it made to other extensions (ID.1, ID.1.2, ...).
        #[arg(long, value_name = "ID", conflicts_with = "verify")]
        request: Option<String>,
        /// Keep printing new records as they arrive.
        #[arg(long)]
        follow: bool,
        /// Check the hash chain (and the head's MAC, with the audit key); exit 1 naming the
        /// first broken record, 75 when another process held the log's lock for 5 s (nothing
        /// checked: try again).
        #[arg(long)]
        verify: bool,
        /// With --verify: check that the log still holds every checkpoint in FILE (records
        /// cut from the end or history rewritten fail, whatever the head says).
        #[arg(long, value_name = "FILE", requires = "verify")]
        checkpoints: Option<PathBuf>,
        /// Verify the log, then append a checkpoint of it (one JSON line) to FILE, or print it
        /// with `-` (e.g. `| logger -t warden-audit`). Keep FILE out of the data dir's reach.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["verify", "follow", "json", "tenant", "request"])]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        key: AuditKeyArg,
        /// Print the stored JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Copy an embedded data dir (registry, blobs, key-value, secrets, audit log) to the
    /// shared storage the config's [storage] names (PostgreSQL and S3), then check the copy
    /// against it: every blob's hash, every table's rows, every secret, the audit chain. The
    /// target must be empty; the data dir is only read (stop everything that uses it first).
    Migrate {
        /// The embedded data dir to copy.
        #[arg(long, value_name = "DIR", default_value = "./warden-data")]
        data: PathBuf,
        /// Operator config file whose [storage] names the target.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The audit key of the data dir's log [default: DATA/audit.key]; the copy's head is
        /// MACed under the config's audit_key_file.
        #[arg(long = "audit-key", value_name = "FILE", env = "WARDEN_AUDIT_KEY")]
        audit_key: Option<PathBuf>,
        /// Check the data dir's audit log against every checkpoint in FILE before copying (a
        /// log cut back to an older genuine head is refused).
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Copy nothing: check a copy made before against the data dir.
        #[arg(long)]
        check: bool,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { publisher, out } => keygen::run(&publisher, &out),
        Command::New {
            name,
            lang,
            world,
            dir,
        } => new::run(&name, lang, world, dir.as_deref()),
        Command::Pack { dir, out } => pack::run(&dir, &out),
        Command::Sign { bundle, key, out } => sign::run(&bundle, &key, out),
        Command::Verify {
            signed,
            data,
            config,
            key,
        } => verify::run(
            &signed.bundle,
            &signed.trust,
            signed.sig,
            data.as_deref(),
            config.as_deref(),
            key.audit_key.as_deref(),
        ),
        Command::Inspect {
            bundle,
            grant,
            config,
        } => inspect::run(&bundle, grant.as_deref(), config.as_deref()),
        Command::Run {
            signed: Signed { bundle, trust, sig },
            data,
            key,
            config,
            grant,
            secret,
            client_cert,
            client_key,
            call,
            input,
            http,
            header,
            body,
        } => {
            let client_identity = match (client_cert, client_key) {
                (Some(cert), Some(key)) => Some(run::read_identity(&cert, &key)?),
                _ => None,
            };
            let grant = grant.parse().map_err(|e| anyhow::anyhow!("--grant: {e}"))?;
            let secrets = secret
                .iter()
                .map(|s| run::parse_secret(s))
                .collect::<anyhow::Result<_>>()?;
            let invocation = match (call, http) {
                (Some(method), _) => run::Invocation::Call {
                    method,
                    input: run::read_arg_or_file(input.as_deref().unwrap_or(""))?,
                },
                (None, Some(spec)) => {
                    let (method, path) = run::parse_http(&spec)?;
                    let headers = header
                        .iter()
                        .map(|h| run::parse_header(h))
                        .collect::<anyhow::Result<_>>()?;
                    let body = match body {
                        Some(b) => run::read_arg_or_file(&b)?,
                        None => Vec::new(),
                    };
                    run::Invocation::Http {
                        method,
                        path,
                        headers,
                        body,
                    }
                }
                (None, None) => anyhow::bail!("give --call METHOD or --http \"METHOD PATH\""),
            };
            run::run(run::RunArgs {
                bundle,
                trust,
                sig,
                data,
                audit_key: key.audit_key,
                config,
                grant,
                secrets,
                client_identity,
                invocation,
            })
        }
        Command::Serve {
            place,
            listen,
            trust,
            admin_token_file,
            runner_token_file,
        } => serve::run(serve::ServeArgs {
            place: place_of(&place, trust.as_deref()),
            listen,
            admin_token_file,
            runner_token_file,
        }),
        Command::Tenant {
            action: TenantAction::Create { name, place },
        } => manage::create_tenant(&place_of(&place, None), &name),
        Command::Install {
            signed,
            tenant,
            grant,
            force,
            place,
        } => manage::install(
            &place_of(&place, Some(&signed.trust)),
            &signed.bundle,
            signed.sig,
            &tenant,
            grant.as_deref(),
            force,
        ),
        Command::Uninstall {
            extension,
            tenant,
            place,
        } => manage::uninstall(&place_of(&place, None), &extension, &tenant),
        Command::Installs { tenant, place } => {
            manage::list(&place_of(&place, None), tenant.as_deref())
        }
        Command::Migrate {
            data,
            config,
            audit_key,
            checkpoints,
            check,
        } => migrate::run(
            &data,
            &config,
            audit_key.as_deref(),
            checkpoints.as_deref(),
            check,
        ),
        Command::Audit {
            data,
            config,
            tenant,
            request,
            follow,
            verify,
            checkpoints,
            checkpoint,
            key,
            json,
        } => {
            let config = crate::storage::read_config(config.as_deref())?;
            let source = crate::storage::audit_source(&config, &data)?;
            let key = key
                .audit_key
                .as_deref()
                .or(crate::storage::shared_audit_key(&config));
            match (checkpoint, verify) {
                (Some(out), _) => audit::checkpoint(&*source, &data, key, &out),
                (None, true) => audit::verify(&*source, &data, key, checkpoints.as_deref()),
                (None, false) => {
                    let filter = warden_audit::Filter {
                        tenant,
                        request,
                        ..warden_audit::Filter::default()
                    };
                    audit::run(&*source, filter, follow, json)
                }
            }
        }
    }
}

fn place_of<'a>(p: &'a PlaceArgs, trust: Option<&'a std::path::Path>) -> manage::Place<'a> {
    manage::Place {
        data: &p.data,
        config: p.config.as_deref(),
        audit_key: p.key.audit_key.as_deref(),
        trust,
    }
}

/// The default signature path: `FILE.wext` → `FILE.wext.sig`.
fn default_sig(bundle: &std::path::Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// The hidden first argument that makes `warden` the compile child.
pub const COMPILE_CHILD: &str = "__compile";

/// Every host the CLI starts compiles in a child process of this very binary (`/proc/self/exe`
/// is the running image, even if the file was replaced since), bounded by `[policy.compile]`.
pub fn compile_in_child(b: warden_host::HostBuilder) -> warden_host::HostBuilder {
    b.compile_process("/proc/self/exe", vec![COMPILE_CHILD.into()])
}
