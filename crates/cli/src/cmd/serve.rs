//! `warden serve`: the runner service on the data dir. Tokens come from the environment or
//! 0600 files, never from the command line (where `ps` would show them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use warden_serve::{ServeOptions, Service, ServiceLimits, Token};
use warden_trust::TrustBundle;

use super::manage::Place;

pub struct ServeArgs<'a> {
    pub place: Place<'a>,
    pub listen: SocketAddr,
    pub admin_token_file: Option<PathBuf>,
    pub runner_token_file: Option<PathBuf>,
}

/// A token from `file` (which must be 0600 and the operator's) or the environment variable
/// `var`; neither: none (that API stays off).
fn token(file: Option<&Path>, var: &str, what: &str) -> Result<Option<Token>> {
    let text = match file {
        Some(f) => {
            warden_datadir::check_private_file(f)
                .with_context(|| format!("the {what} token file {}", f.display()))?;
            Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the {what} token file {}", f.display()))?,
            )
        }
        None => std::env::var(var).ok(),
    };
    text.map(|t| Token::new(&t).with_context(|| format!("the {what} token")))
        .transpose()
}

/// Raises this process's open files limit to its hard limit: a service keeps descriptors per
/// connection, per call's sandbox, and per tenant (rate buckets, seats), and the usual soft
/// limit of 1,024 ran out at about 850 active tenants (outside attack, session 40: every call
/// then failed until a restart). Sandboxes set their own, lower, limit.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // The kernel's own ceiling (`fs.nr_open`) by default: no soft limit may pass it.
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let to = limit.maximum.unwrap_or(CEILING).min(CEILING);
    if limit.current.is_some_and(|now| now < to) {
        let raised = rustix::process::Rlimit {
            current: Some(to),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(to, "open files limit raised"),
            Err(e) => {
                tracing::warn!(error = %e, "the open files limit could not be raised to its hard limit")
            }
        }
    }
}

pub fn run(a: ServeArgs<'_>) -> Result<()> {
    crate::logs::init()?;
    raise_open_files_limit();
    let admin_token = token(a.admin_token_file.as_deref(), "WARDEN_ADMIN_TOKEN", "admin")?;
    let runner_token = token(
        a.runner_token_file.as_deref(),
        "WARDEN_RUNNER_TOKEN",
        "runner",
    )?;
    let config = crate::storage::read_config(a.place.config)?;
    let limits: ServiceLimits = config.policy.gateway;
    let mut opened = crate::storage::open(
        &config,
        a.place.data,
        a.place.audit_key,
        crate::storage::Use::Service,
    )?;
    let fleet_rate = opened.rate.take();
    let shared_trust = opened.trust.take();
    let mut builder = opened.apply(
        super::compile_in_child(warden_host::Host::builder())
            .policy(config.policy)
            .guest_threads(true),
        a.place.data,
        a.place.audit_key,
    );
    if let Some(trust) = a.place.trust {
        builder = builder.trust(
            TrustBundle::read_file(trust)
                .with_context(|| format!("reading trust bundle {}", trust.display()))?,
        );
    }
    let host = builder.build().context("starting the host")?;
    // The registry opens now, so that a broken data dir fails the start, not the first call.
    host.admin().context("opening the registry")?;
    // The fleet's buckets, or else the buckets and seats of the runners on this data dir.
    let sharing = match fleet_rate {
        Some(fleet) => warden_serve::Sharing::Fleet(fleet),
        None => warden_serve::Sharing::DataDir {
            rate: std::sync::Arc::new(
                warden_store_sqlite::FileRateLeases::open(a.place.data)
                    .context("opening the tenants' rate buckets")?,
            ),
            seats: std::sync::Arc::new(
                warden_store_sqlite::FileSeats::open(a.place.data)
                    .context("opening the tenants' seats")?,
            ),
        },
    };
    // The audit key (made by the host's start if it was missing), for the admin API's chain
    // check: what `warden audit --verify` on this data dir uses.
    let audit_key = super::audit::key(a.place.data, a.place.audit_key)?;
    let service = Service::new(
        host,
        ServeOptions {
            admin_token,
            runner_token,
            trust_file: a.place.trust.map(Path::to_path_buf),
            limits,
            sharing,
            shared_trust,
            audit_key,
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // The one line a supervisor (or a test) reads to know where the service is.
        outln!("warden serve listening on http://{addr}");
        tracing::info!(
            listen = %addr,
            admin_api = on_off(service_has(&service, true)),
            runner_api = on_off(service_has(&service, false)),
            "serving"
        );
        let reload = std::sync::Arc::clone(&service);
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let s = std::sync::Arc::clone(&reload);
                let done = tokio::task::spawn_blocking(move || s.reload_trust()).await;
                match done {
                    Ok(Ok(())) => tracing::info!("trust bundle reloaded (SIGHUP)"),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e.message, "reloading the trust bundle (SIGHUP)");
                    }
                    Err(e) => tracing::error!(error = %e, "reloading the trust bundle (SIGHUP)"),
                }
            }
        });
        service
            .follow_shared_trust()
            .map_err(|e| anyhow::anyhow!(e.message))
            .context("reading the fleet's trust bundle")?;
        service.follow_installs();
        service.give_back_memory();
        warden_serve::serve(service, listener, shutdown_signal())
            .await
            .context("serving")
    });
    // The service ends with its runtime's tasks, and its sandboxes with it: their folders go.
    drop(runtime);
    warden_host::remove_sandbox_folders();
    served
}

fn service_has(s: &Service, admin: bool) -> bool {
    s.has_token(admin)
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off (no token)" }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the service runs until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
