//! `warden_registry::RateLeases` on PostgreSQL: one token bucket per tenant in `rate_buckets`,
//! shared by every runner (plan 3.3).
//!
//! A lease is one statement (one round trip) that refills the bucket and takes from it under
//! the row lock of the upsert, so concurrent runners serialize on the row and the bucket never
//! lends more than rate × time + burst. The time is the server's `clock_timestamp()`, read once
//! per statement (the inserted row's `at`, seen as `excluded.at` by the update), so the runners'
//! clocks do not matter; a server clock stepping back refills nothing rather than going
//! negative. The `INSERT … ON CONFLICT` form is on purpose: an `INSERT` in a CTE followed by an
//! `UPDATE` returned no rows on a bucket's first lease (the CTE's snapshot).

use warden_manifest::TenantName;
use warden_registry::{Rate, RateLeases, RegistryError};

use crate::PgStore;

/// `$1` tenant, `$2` rate per second, `$3` burst, `$4` tokens wanted (all numbers `float8`).
const LEASE: &str = "
INSERT INTO rate_buckets AS r (tenant, tokens, at, granted)
SELECT $1, $3 - least(floor($3), $4), c.now, least(floor($3), $4)::int
FROM (SELECT clock_timestamp() AS now) c
ON CONFLICT (tenant) DO UPDATE SET
  granted = least(floor(least($3, r.tokens
              + $2 * greatest(0, extract(epoch FROM excluded.at - r.at)::float8))), $4)::int,
  tokens = least($3, r.tokens + $2 * greatest(0, extract(epoch FROM excluded.at - r.at)::float8))
         - least(floor(least($3, r.tokens
              + $2 * greatest(0, extract(epoch FROM excluded.at - r.at)::float8))), $4),
  at = greatest(r.at, excluded.at)
RETURNING granted";

/// `$1` tenant, `$2` tokens given back, `$3` burst. Adding before the refill the next lease
/// makes gives the same bucket as refilling first: both are capped at the burst.
const GIVE_BACK: &str = "UPDATE rate_buckets SET tokens = least($3, tokens + $2) WHERE tenant = $1";

/// The shared rate buckets of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgRateLeases {
    store: PgStore,
}

impl PgRateLeases {
    pub(crate) fn new(store: PgStore) -> PgRateLeases {
        PgRateLeases { store }
    }

    /// Runs one statement on a pooled connection and returns its rows.
    fn statement(
        &self,
        sql: &'static str,
        tenant: &TenantName,
        a: f64,
        b: f64,
        c: Option<f64>,
    ) -> Result<Vec<tokio_postgres::Row>, RegistryError> {
        let tenant = tenant.as_str().to_owned();
        pooled(&self.store, move |client| async move {
            let st = client.prepare_cached(sql).await?;
            Ok(match c {
                Some(c) => client.query(&st, &[&tenant, &a, &b, &c]).await?,
                None => client.query(&st, &[&tenant, &a, &b]).await?,
            })
        })
    }
}

/// Runs `work` on a pooled connection of `store`; any failure is the registry's `Storage`.
fn pooled<T, F, Fut>(store: &PgStore, work: F) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, crate::BoxError>> + Send,
{
    let pool = store.pool().clone();
    let r = store
        .run(async move {
            let client = pool
                .get()
                .await
                .map_err(|e| Box::new(e) as crate::BoxError)?;
            work(client).await
        })
        .map_err(|e| storage(store, Box::new(e)))?;
    r.map_err(|e| storage(store, e))
}

impl RateLeases for PgRateLeases {
    fn lease(&self, tenant: &TenantName, want: u32, rate: Rate) -> Result<u32, RegistryError> {
        let rows = self.statement(
            LEASE,
            tenant,
            f64::from(rate.per_second.get()),
            f64::from(rate.burst.get()),
            Some(f64::from(want)),
        )?;
        let granted: i32 = rows
            .first()
            .ok_or_else(|| storage(&self.store, "the rate lease returned no row".into()))?
            .try_get(0)
            .map_err(|e| storage(&self.store, Box::new(e)))?;
        // Never negative or above `want` by the statement; clamp anyway rather than trust it.
        Ok(u32::try_from(granted).unwrap_or(0).min(want))
    }

    fn give_back(&self, tenant: &TenantName, n: u32, rate: Rate) -> Result<(), RegistryError> {
        if n == 0 {
            return Ok(());
        }
        self.statement(
            GIVE_BACK,
            tenant,
            f64::from(n),
            f64::from(rate.burst.get()),
            None,
        )?;
        Ok(())
    }
}

/// The fleet's trust bundle in the `trust_bundle` row (see `warden_registry::SharedTrust`).
#[derive(Debug, Clone)]
pub struct PgSharedTrust {
    store: PgStore,
}

impl PgSharedTrust {
    pub(crate) fn new(store: PgStore) -> PgSharedTrust {
        PgSharedTrust { store }
    }
}

impl warden_registry::SharedTrust for PgSharedTrust {
    fn current(&self) -> Result<Option<String>, RegistryError> {
        pooled(&self.store, |client| async move {
            let row = client
                .query_opt("SELECT text FROM trust_bundle WHERE id = 1", &[])
                .await?;
            Ok(match row {
                Some(r) => Some(r.try_get::<_, String>(0)?),
                None => None,
            })
        })
    }

    fn replace(&self, text: &str) -> Result<(), RegistryError> {
        use sha2::Digest as _;
        let text = text.to_owned();
        let sha: String = sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        pooled(&self.store, move |client| async move {
            client
                .execute(
                    "INSERT INTO trust_bundle (id, sha256, text) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO UPDATE SET sha256 = $1, text = $2",
                    &[&sha, &text],
                )
                .await?;
            Ok(())
        })
    }
}

/// A failure of `store`, as the registry names it.
fn storage(store: &PgStore, source: crate::BoxError) -> RegistryError {
    RegistryError::Storage {
        location: store.location(),
        source,
    }
}
