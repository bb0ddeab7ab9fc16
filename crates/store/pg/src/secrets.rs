//! [`SecretRows`] on PostgreSQL: `secret_values` and the key-check row `secret_meta`. The rows
//! are sealed before they get here (`warden_secrets::SecretStore`): the database never sees a
//! key or a plaintext. Reads go to the database on every call, so a change made through any
//! runner is seen at once.

use deadpool_postgres::Object;
use warden_manifest::{ExtensionId, SecretName, TenantName};
use warden_secrets::{SealedRow, SecretError, SecretId, SecretRows, parse_secret_id};

use crate::PgStore;

/// The sealed secret rows of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgSecretRows {
    store: PgStore,
}

impl PgSecretRows {
    pub(crate) fn new(store: PgStore) -> PgSecretRows {
        PgSecretRows { store }
    }

    fn err(&self) -> impl Fn(crate::BoxError) -> SecretError + Clone + Send + 'static {
        let location = self.location();
        move |source| SecretError::Storage {
            location: location.clone(),
            source,
        }
    }

    /// Runs `f` with a pooled connection on the store's runtime.
    fn with<T, F, Fut>(&self, f: F) -> Result<T, SecretError>
    where
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, crate::BoxError>> + Send,
        T: Send + 'static,
    {
        let pool = self.store.pool().clone();
        self.store
            .run(async move {
                let client = pool.get().await.map_err(crate::BoxError::from)?;
                f(client).await
            })
            .map_err(|e| self.err()(Box::new(e)))?
            .map_err(self.err())
    }
}

fn ids(t: &TenantName, e: &ExtensionId, n: &SecretName) -> (String, String, String) {
    (
        t.as_str().to_owned(),
        e.as_str().to_owned(),
        n.as_str().to_owned(),
    )
}

impl SecretRows for PgSecretRows {
    fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SealedRow>, SecretError> {
        let (t, e, n) = ids(tenant, extension, name);
        self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT nonce, ciphertext FROM secret_values
                     WHERE tenant = $1 AND extension = $2 AND name = $3",
                )
                .await?;
            match c.query_opt(&st, &[&t, &e, &n]).await? {
                Some(r) => Ok(Some(SealedRow {
                    nonce: r.try_get(0)?,
                    ciphertext: r.try_get(1)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        row: &SealedRow,
    ) -> Result<(), SecretError> {
        let (t, e, n) = ids(tenant, extension, name);
        let row = row.clone();
        self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "INSERT INTO secret_values (tenant, extension, name, nonce, ciphertext)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, extension, name)
                     DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                )
                .await?;
            c.execute(&st, &[&t, &e, &n, &row.nonce, &row.ciphertext])
                .await?;
            Ok(())
        })
    }

    fn delete(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, SecretError> {
        let (t, e, n) = ids(tenant, extension, name);
        self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "DELETE FROM secret_values WHERE tenant = $1 AND extension = $2 AND name = $3",
                )
                .await?;
            Ok(c.execute(&st, &[&t, &e, &n]).await? > 0)
        })
    }

    fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError> {
        let (t, e) = (tenant.as_str().to_owned(), extension.as_str().to_owned());
        self.with(move |c| async move {
            let st = c
                .prepare_cached(
                    "SELECT name FROM secret_values WHERE tenant = $1 AND extension = $2
                     ORDER BY name",
                )
                .await?;
            let mut out = Vec::new();
            for r in c.query(&st, &[&t, &e]).await? {
                let name: String = r.try_get(0)?;
                // A row whose name is not a valid secret name was not written by warden: skip.
                if let Ok(n) = name.parse() {
                    out.push(n);
                }
            }
            Ok(out)
        })
    }

    fn identities(&self) -> Result<Vec<SecretId>, SecretError> {
        self.with(move |c| async move {
            let mut out = Vec::new();
            for r in c
                .query("SELECT tenant, extension, name FROM secret_values", &[])
                .await?
            {
                let (t, x, n): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                out.push(parse_secret_id(&t, &x, &n).map_err(crate::BoxError::from)?);
            }
            out.sort();
            Ok(out)
        })
    }

    fn key_check(&self, proposed: &SealedRow) -> Result<SealedRow, SecretError> {
        let proposed = proposed.clone();
        self.with(move |c| async move {
            // Runners starting together race here: the first insert wins, all read the winner.
            c.execute(
                "INSERT INTO secret_meta (id, nonce, check_ciphertext) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&proposed.nonce, &proposed.ciphertext],
            )
            .await?;
            let r = c
                .query_one(
                    "SELECT nonce, check_ciphertext FROM secret_meta WHERE id = 1",
                    &[],
                )
                .await?;
            Ok(SealedRow {
                nonce: r.try_get(0)?,
                ciphertext: r.try_get(1)?,
            })
        })
    }

    fn location(&self) -> String {
        self.store.location()
    }
}
