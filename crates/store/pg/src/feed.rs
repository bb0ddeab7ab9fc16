//! Changes announced to every runner: `NOTIFY warden_changes` with the payload
//! `v1 <registry_version> <kind> <tenant> <extension>` (`-` for none), sent in the transaction of
//! the change so it is delivered only on commit (plan 3.2).
//!
//! [`PgStore::changes`] listens on a connection of its own and hands each notice over a std
//! channel. This is the raw feed only: when its connection is lost the channel is closed (the
//! sender dropped), and the consumer must subscribe again and reload what it keeps, since
//! notices sent meanwhile are lost. The registry snapshot (`snapshot`) listens the same way
//! ([`listen`]) and adds the reconnects, the version poll and the 1 s freshness bound.

use std::sync::mpsc;

use tokio_postgres::AsyncMessage;

use crate::tls::Connector;
use crate::{PgError, PgStore};

/// The channel every change is announced on.
pub const CHANNEL: &str = "warden_changes";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Tenant,
    Install,
    Uninstall,
    Publish,
    Secret,
    Trust,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Tenant => "tenant",
            ChangeKind::Install => "install",
            ChangeKind::Uninstall => "uninstall",
            ChangeKind::Publish => "publish",
            ChangeKind::Secret => "secret",
            ChangeKind::Trust => "trust",
        }
    }

    fn parse(s: &str) -> Option<ChangeKind> {
        [
            ChangeKind::Tenant,
            ChangeKind::Install,
            ChangeKind::Uninstall,
            ChangeKind::Publish,
            ChangeKind::Secret,
            ChangeKind::Trust,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One announced change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `warden_meta.registry_version` after the change: a consumer that sees a jump of more
    /// than one has missed a notice and reloads.
    pub version: i64,
    pub kind: ChangeKind,
    pub tenant: Option<String>,
    pub extension: Option<String>,
}

impl Change {
    /// The notice's payload.
    pub(crate) fn payload(&self) -> String {
        let part = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        format!(
            "v1 {} {} {} {}",
            self.version,
            self.kind.as_str(),
            part(&self.tenant),
            part(&self.extension)
        )
    }

    /// A payload back; `None` for one this warden does not know (a newer runner's).
    pub fn parse(payload: &str) -> Option<Change> {
        let mut parts = payload.split(' ');
        let (v, version, kind, tenant, extension) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if v != "v1" || parts.next().is_some() {
            return None;
        }
        let part = |s: &str| (s != "-").then(|| s.to_owned());
        Some(Change {
            version: version.parse().ok()?,
            kind: ChangeKind::parse(kind)?,
            tenant: part(tenant),
            extension: part(extension),
        })
    }
}

/// Bumps the registry version and announces `kind` in the transaction `tx` (delivered on its
/// commit). The row lock taken is the registry's write lock (see `registry`).
pub(crate) async fn announce(
    tx: &deadpool_postgres::Transaction<'_>,
    kind: ChangeKind,
    tenant: Option<&str>,
    extension: Option<&str>,
) -> Result<i64, tokio_postgres::Error> {
    let st = tx
        .prepare_cached(
            "UPDATE warden_meta SET registry_version = registry_version + 1 WHERE id = 1
             RETURNING registry_version",
        )
        .await?;
    let version: i64 = tx.query_one(&st, &[]).await?.try_get(0)?;
    let change = Change {
        version,
        kind,
        tenant: tenant.map(str::to_owned),
        extension: extension.map(str::to_owned),
    };
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &change.payload()])
        .await?;
    Ok(version)
}

/// Opens a connection of its own (with the store's TLS settings, as every connection) and
/// listens on [`CHANNEL`]: returns once listening, with the notices in commit order. The
/// receiver ends when the connection is lost; dropping the client closes it.
pub(crate) async fn listen(
    config: &tokio_postgres::Config,
    tls: &Connector,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    tokio_postgres::Error,
> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (notices, incoming) = tokio::sync::mpsc::unbounded_channel();
    // Polling the connection also drives the client's queries (the LISTEN below).
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notices.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "warden::pg", error = %e, "change listener lost its connection");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, incoming))
}

impl PgStore {
    /// Announces a change made outside the registry (a secret, the trust bundle) to every
    /// runner: bumps the registry version and notifies, in one transaction. Returns the new
    /// version.
    pub fn notify(
        &self,
        kind: ChangeKind,
        tenant: Option<&str>,
        extension: Option<&str>,
    ) -> Result<i64, PgError> {
        let (pool, url) = (self.pool().clone(), self.url().clone());
        let (tenant, extension) = (tenant.map(str::to_owned), extension.map(str::to_owned));
        let db = move |e: Box<dyn std::error::Error + Send + Sync>| PgError::Database {
            url: url.clone(),
            action: "announcing a change",
            source: e,
        };
        self.run(async move {
            let mut c = pool.get().await.map_err(|e| db(Box::new(e)))?;
            let tx = c.transaction().await.map_err(|e| db(Box::new(e)))?;
            let v = announce(&tx, kind, tenant.as_deref(), extension.as_deref())
                .await
                .map_err(|e| db(Box::new(e)))?;
            tx.commit().await.map_err(|e| db(Box::new(e)))?;
            Ok(v)
        })?
    }

    /// Listens for changes on a connection of its own: each committed change, from any runner,
    /// arrives on the receiver in commit order. Returns once listening, so every change
    /// committed after the call is seen. The receiver is disconnected when the connection is
    /// lost (subscribe again, and reload); dropping it stops the listener.
    pub fn changes(&self) -> Result<mpsc::Receiver<Change>, PgError> {
        let (config, url) = (self.inner.config.clone(), self.url().clone());
        let tls = self.tls().clone();
        let (tx, rx) = mpsc::channel();
        let listening = self.run(async move {
            let (client, mut incoming) = listen(&config, &tls).await.map_err(|e| PgError::Database {
                url: url.clone(),
                action: "listening for changes",
                source: Box::new(e),
            })?;
            tokio::spawn(async move {
                // The client lives as long as the listener: dropping it would close the
                // connection.
                let _client = client;
                while let Some(n) = incoming.recv().await {
                    match Change::parse(n.payload()) {
                        Some(change) => {
                            if tx.send(change).is_err() {
                                break;
                            }
                        }
                        None => {
                            tracing::debug!(target: "warden::pg", payload = n.payload(), "unknown change notice")
                        }
                    }
                }
            });
            Ok::<_, PgError>(())
        })?;
        listening?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let c = Change {
            version: 42,
            kind: ChangeKind::Uninstall,
            tenant: Some("acme".into()),
            extension: Some("acme.hello".into()),
        };
        assert_eq!(c.payload(), "v1 42 uninstall acme acme.hello");
        assert_eq!(Change::parse(&c.payload()), Some(c));
        let t = Change {
            version: 1,
            kind: ChangeKind::Trust,
            tenant: None,
            extension: None,
        };
        assert_eq!(Change::parse(&t.payload()), Some(t));
        for bad in [
            "v2 1 trust - -",
            "v1 x trust - -",
            "v1 1 what - -",
            "v1 1 trust -",
        ] {
            assert_eq!(Change::parse(bad), None, "{bad}");
        }
    }
}
