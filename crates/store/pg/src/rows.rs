//! Rows of the registry tables read back into the registry's types, and why one try of a
//! registry transaction failed: shared by the registry's queries and its snapshot.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::PoolError;
use tokio_postgres::Row;
use warden_registry::{Approval, InstallRecord, Published, RegistryError};

/// Why one try failed: a rule of the registry (final), or the database (maybe retried).
pub(crate) enum Fail {
    Registry(RegistryError),
    Db(tokio_postgres::Error),
    Pool(PoolError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Fail {
        Fail::Pool(e)
    }
}

impl From<RegistryError> for Fail {
    fn from(e: RegistryError) -> Fail {
        Fail::Registry(e)
    }
}

pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) fn damaged(what: &str, value: &str) -> RegistryError {
    RegistryError::Damaged(format!("{what} {value:?}"))
}

pub(crate) const INSTALL_COLUMNS: &str =
    "tenant, extension, version, content_hash, grant_text, approved, installed_ms";

pub(crate) fn install_row(r: &Row) -> Result<InstallRecord, Fail> {
    let text = |i| r.try_get::<_, String>(i);
    let (tenant, extension, version, hash, grant, approved) =
        (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?, text(5)?);
    Ok(InstallRecord {
        tenant: tenant.parse().map_err(|_| damaged("tenant", &tenant))?,
        extension: extension
            .parse()
            .map_err(|_| damaged("extension", &extension))?,
        version: version.parse().map_err(|_| damaged("version", &version))?,
        content_hash: hash.parse().map_err(|_| damaged("content hash", &hash))?,
        grant: grant.parse().map_err(|_| damaged("grant", &grant))?,
        approved: Approval::from_text(&approved),
        installed: time(r.try_get(6)?),
    })
}

pub(crate) const PUBLISHED_COLUMNS: &str =
    "content_hash, id, version, publisher, signature, published_ms";

pub(crate) fn published_row(r: &Row) -> Result<Published, Fail> {
    let text = |i| r.try_get::<_, String>(i);
    let (hash, id, version, publisher) = (text(0)?, text(1)?, text(2)?, text(3)?);
    Ok(Published {
        content_hash: hash.parse().map_err(|_| damaged("content hash", &hash))?,
        id: id.parse().map_err(|_| damaged("extension", &id))?,
        version: version.parse().map_err(|_| damaged("version", &version))?,
        publisher: publisher
            .parse()
            .map_err(|_| damaged("publisher", &publisher))?,
        signature: r.try_get(4)?,
        published: time(r.try_get(5)?),
    })
}
