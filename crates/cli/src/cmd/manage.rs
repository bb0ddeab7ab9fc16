//! `warden tenant create`, `warden install`, `warden uninstall`, `warden installs`: the
//! registry of a data dir, offline (the same rules as the service's admin API).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use warden_host::{ExtensionId, Grant, Host, TenantName, TrustBundle};

use crate::files::read_bounded;

/// Where a management command works.
pub struct Place<'a> {
    pub data: &'a Path,
    pub config: Option<&'a Path>,
    pub audit_key: Option<&'a Path>,
    pub trust: Option<&'a Path>,
}

fn host(place: &Place<'_>) -> Result<Host> {
    let config = crate::storage::read_config(place.config)?;
    let opened = crate::storage::open(
        &config,
        place.data,
        place.audit_key,
        crate::storage::Use::Command,
    )?;
    let mut b = opened.apply(
        super::compile_in_child(Host::builder()).policy(config.policy),
        place.data,
        place.audit_key,
    );
    if let Some(trust) = place.trust {
        b = b.trust(
            TrustBundle::read_file(trust)
                .with_context(|| format!("reading trust bundle {}", trust.display()))?,
        );
    }
    b.build().context("opening the storage")
}

fn tenant_name(name: &str) -> Result<TenantName> {
    name.parse()
        .map_err(|e| anyhow::anyhow!(super::UsageError(format!("tenant {name:?}: {e}"))))
}

/// `warden tenant create NAME`: prints the API key, once.
pub fn create_tenant(place: &Place<'_>, name: &str) -> Result<()> {
    let name = tenant_name(name)?;
    let host = host(place)?;
    let key = host.admin()?.create_tenant(&name)?;
    outln!("tenant {name} created");
    outln!("api key (shown once, keep it secret): {}", key.reveal());
    Ok(())
}

/// `warden install FILE.wext --tenant NAME --trust TRUST [--grant ...] [--force]`.
pub fn install(
    place: &Place<'_>,
    bundle: &Path,
    sig: Option<PathBuf>,
    tenant: &str,
    grant: Option<&str>,
    force: bool,
) -> Result<()> {
    let tenant = tenant_name(tenant)?;
    let grant: Option<Grant> = grant
        .map(|g| g.parse().map_err(|e| anyhow::anyhow!("--grant: {e}")))
        .transpose()?;
    let sig = sig.unwrap_or_else(|| super::default_sig(bundle));
    let bundle_bytes = read_bounded(
        bundle,
        warden_bundle::BundleLimits::default().max_total_bytes,
    )
    .with_context(|| format!("reading bundle {}", bundle.display()))?;
    let sig_bytes = read_bounded(&sig, 1 << 20)
        .with_context(|| format!("reading signature {}", sig.display()))?;
    let host = host(place)?;
    // Installing compiles the component (for 10-30 s if it is big): said on a terminal.
    let ticker = crate::ticker::Ticker::start(format!(
        "verifying and compiling {} ({:.1} MB)",
        bundle.display(),
        bundle_bytes.len() as f64 / 1e6
    ));
    let done = host
        .admin()?
        .install(
            &tenant,
            &bundle.display().to_string(),
            bundle_bytes,
            &sig_bytes,
            grant.as_ref(),
            force,
        )
        .with_context(|| format!("installing {} for tenant {tenant}", bundle.display()));
    drop(ticker);
    let done = done?;
    let r = &done.record;
    let what = &done.plan;
    outln!(
        "{} {} {what} for tenant {}",
        r.extension,
        r.version,
        r.tenant
    );
    outln!("content hash: {}", r.content_hash);
    outln!("grant: {}", r.grant);
    Ok(())
}

/// `warden uninstall EXTENSION_ID --tenant NAME`.
pub fn uninstall(place: &Place<'_>, extension: &str, tenant: &str) -> Result<()> {
    let tenant = tenant_name(tenant)?;
    let id: ExtensionId = extension
        .parse()
        .map_err(|e| anyhow::anyhow!(super::UsageError(format!("extension {extension:?}: {e}"))))?;
    let host = host(place)?;
    if !host.admin()?.uninstall(&tenant, &id)? {
        anyhow::bail!("{id} is not installed for tenant {tenant}");
    }
    outln!("{id} uninstalled for tenant {tenant}");
    Ok(())
}

/// `warden installs [--tenant NAME]`: one line per install.
pub fn list(place: &Place<'_>, tenant: Option<&str>) -> Result<()> {
    let tenant = tenant.map(tenant_name).transpose()?;
    let config = crate::storage::read_config(place.config)?;
    let registry = crate::storage::registry(&config, place.data)?;
    for i in registry
        .installs(tenant.as_ref())
        .context("listing the installs")?
    {
        outln!(
            "{} {} {} {} grant={}",
            i.tenant,
            i.extension,
            i.version,
            i.content_hash,
            i.grant
        );
    }
    Ok(())
}
