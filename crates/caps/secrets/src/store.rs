//! Secret values per (tenant, extension, name), each encrypted with XChaCha20-Poly1305 before
//! it reaches a [`SecretRows`] storage: a random 192-bit nonce per write, and associated data
//! binding the row's tenant, extension and name, so a ciphertext copied to another row
//! (another extension, tenant or name) fails to decrypt. All the cryptography is here; the
//! storage keeps opaque rows.

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use warden_manifest::{ExtensionId, SecretName, TenantName};
use zeroize::Zeroizing;

use crate::key::SecretKey;
use crate::rows::{MemoryRows, SealedRow, SecretRows};
use crate::{SecretError, SecretValue};

/// Domain separation for the associated data, versioned with the row format.
const AAD_PREFIX: &[u8] = b"warden-secret-v1\0";
const NONCE_BYTES: usize = 24;
/// A known plaintext stored once per storage: a wrong key file is reported at start, not at
/// the first read of each secret.
const CHECK_PLAINTEXT: &[u8] = b"warden secret key check";
const CHECK_AAD: &[u8] = b"warden-secret-check-v1";

/// Encrypted secret values over a [`SecretRows`] storage. Cheap to share behind an `Arc`.
pub struct SecretStore {
    rows: Arc<dyn SecretRows>,
    cipher: XChaCha20Poly1305,
    /// A seed derived one way from the key (SHA-256 over a tag and the key): the same for
    /// every runner that shares the key, and telling nothing of it.
    claims_seed: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("location", &self.rows.location())
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// A store over `rows` under `key`. A key that does not match the one the rows were first
    /// written with is [`SecretError::WrongKey`] (checked here, against the storage's key-check
    /// row, which the first store to open it records).
    pub fn new(rows: Arc<dyn SecretRows>, key: &SecretKey) -> Result<Self, SecretError> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"warden-remote-claims/v1\0");
        h.update(key.bytes());
        let store = SecretStore {
            rows,
            cipher: XChaCha20Poly1305::new(key.bytes().into()),
            claims_seed: zeroize::Zeroizing::new(h.finalize().into()),
        };
        store.check_key()?;
        Ok(store)
    }

    /// The seed of the key that signs remote extensions' claims (`warden-remote`): derived
    /// from this store's key, so every runner of a fleet signs with the same one.
    pub fn claims_seed(&self) -> &[u8; 32] {
        &self.claims_seed
    }

    /// A store that lives in memory only ([`MemoryRows`]), with a random key (hosts without a
    /// data folder).
    pub fn in_memory() -> Result<Self, SecretError> {
        Self::new(Arc::new(MemoryRows::new()), &SecretKey::random())
    }

    /// Compares the key with the one the storage was first written with, recording a check
    /// value on first use (two first starts may race: the storage keeps the first, both
    /// compare against it).
    fn check_key(&self) -> Result<(), SecretError> {
        let proposed = self.seal(CHECK_PLAINTEXT, CHECK_AAD, "the key check")?;
        let stored = self.rows.key_check(&proposed)?;
        let ok = self
            .unseal(&stored, CHECK_AAD)
            .is_some_and(|p| p.as_slice() == CHECK_PLAINTEXT);
        if ok {
            Ok(())
        } else {
            Err(SecretError::WrongKey {
                location: self.rows.location(),
            })
        }
    }

    /// Stores (or replaces) a value, encrypted under a fresh nonce.
    pub fn put(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let row = self.seal(
            value.expose().as_bytes(),
            &aad(tenant, extension, name),
            &format!("secret {name}"),
        )?;
        self.rows.put(tenant, extension, name, &row)
    }

    /// The value of a secret, `None` if it was never set. A row that does not decrypt (wrong
    /// key, tampered or moved ciphertext) is [`SecretError::Decrypt`], naming the secret.
    pub fn get(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<Option<SecretValue>, SecretError> {
        let Some(row) = self.rows.get(tenant, extension, name)? else {
            return Ok(None);
        };
        let failed = || SecretError::Decrypt {
            tenant: tenant.to_string(),
            extension: extension.to_string(),
            name: name.to_string(),
        };
        let plain = self
            .unseal(&row, &aad(tenant, extension, name))
            .ok_or_else(failed)?;
        let text = std::str::from_utf8(&plain).map_err(|_| failed())?;
        SecretValue::new(text.to_string()).map(Some)
    }

    /// Removes a secret; `true` if it existed.
    pub fn delete(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
        name: &SecretName,
    ) -> Result<bool, SecretError> {
        self.rows.delete(tenant, extension, name)
    }

    /// The names set for (tenant, extension), sorted.
    pub fn names(
        &self,
        tenant: &TenantName,
        extension: &ExtensionId,
    ) -> Result<Vec<SecretName>, SecretError> {
        // Sorted here, so every storage lists alike.
        let mut names = self.rows.names(tenant, extension)?;
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Encrypts `msg` under a fresh nonce; `what` names it in the (unlikely) error.
    fn seal(&self, msg: &[u8], aad: &[u8], what: &str) -> Result<SealedRow, SecretError> {
        let nonce = random_nonce();
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
            .map_err(|_| SecretError::Storage {
                location: self.rows.location(),
                source: format!("encrypting {what} failed").into(),
            })?;
        Ok(SealedRow {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// The plaintext of `row`, `None` if it does not authenticate under this key and `aad`
    /// (a nonce of the wrong length is refused before it reaches the cipher).
    fn unseal(&self, row: &SealedRow, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if row.nonce.len() != NONCE_BYTES {
            return None;
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(&row.nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// Tenant, extension and name, NUL-separated (none of them can contain NUL).
fn aad(tenant: &TenantName, extension: &ExtensionId, name: &SecretName) -> Vec<u8> {
    let mut a = AAD_PREFIX.to_vec();
    for part in [tenant.as_str(), extension.as_str(), name.as_str()] {
        a.extend_from_slice(part.as_bytes());
        a.push(0);
    }
    a
}

fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TenantName, ExtensionId, SecretName) {
        (
            "acme".parse().unwrap(),
            "acme.invoices".parse().unwrap(),
            "API_TOKEN".parse().unwrap(),
        )
    }

    fn val(s: &str) -> SecretValue {
        SecretValue::new(s.into()).unwrap()
    }

    /// A store over rows the test can also reach, as a storage adversary could.
    fn over_memory() -> (Arc<MemoryRows>, SecretStore) {
        let rows = Arc::new(MemoryRows::new());
        let store = SecretStore::new(rows.clone(), &SecretKey::random()).unwrap();
        (rows, store)
    }

    #[test]
    fn put_get_delete_and_nonce_per_write() {
        let (rows, s) = over_memory();
        let (t, e, n) = ids();
        assert!(s.get(&t, &e, &n).unwrap().is_none());
        s.put(&t, &e, &n, &val("first")).unwrap();
        let r1 = rows.get(&t, &e, &n).unwrap().unwrap();
        s.put(&t, &e, &n, &val("second")).unwrap();
        let r2 = rows.get(&t, &e, &n).unwrap().unwrap();
        assert_ne!(r1.nonce, r2.nonce);
        assert_eq!(r1.nonce.len(), NONCE_BYTES);
        // The storage never holds the plaintext.
        assert!(!r2.ciphertext.windows(6).any(|w| w == b"second"));
        assert_eq!(s.get(&t, &e, &n).unwrap().unwrap().expose(), "second");
        assert_eq!(s.names(&t, &e).unwrap(), vec![n.clone()]);
        assert!(s.delete(&t, &e, &n).unwrap());
        assert!(!s.delete(&t, &e, &n).unwrap());
        assert!(s.get(&t, &e, &n).unwrap().is_none());
    }

    #[test]
    fn names_are_sorted_and_scoped() {
        let (_rows, s) = over_memory();
        let (t, e, _) = ids();
        for n in ["ZETA", "ALPHA", "MID"] {
            s.put(&t, &e, &n.parse().unwrap(), &val("v")).unwrap();
        }
        let other: ExtensionId = "acme.other".parse().unwrap();
        s.put(&t, &other, &"OTHER".parse().unwrap(), &val("v"))
            .unwrap();
        let names: Vec<String> = s
            .names(&t, &e)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["ALPHA", "MID", "ZETA"]);
    }

    #[test]
    fn tampered_row_names_the_secret_not_the_value() {
        let (rows, s) = over_memory();
        let (t, e, n) = ids();
        s.put(&t, &e, &n, &val("s3cret-value")).unwrap();
        let good = rows.get(&t, &e, &n).unwrap().unwrap();
        let mut bad = good.clone();
        bad.ciphertext[3] ^= 1;
        rows.put(&t, &e, &n, &bad).unwrap();
        let err = s.get(&t, &e, &n).unwrap_err().to_string();
        assert!(
            err.contains("API_TOKEN") && err.contains("acme.invoices"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        // A nonce of the wrong length is the same error, not a panic in the cipher.
        let mut short = good;
        short.nonce.pop();
        rows.put(&t, &e, &n, &short).unwrap();
        assert!(matches!(
            s.get(&t, &e, &n),
            Err(SecretError::Decrypt { .. })
        ));
    }

    /// The associated data binds tenant, extension and name: a row copied elsewhere is refused.
    #[test]
    fn a_row_moved_to_another_secret_does_not_decrypt() {
        let (rows, s) = over_memory();
        let (t, e, n) = ids();
        s.put(&t, &e, &n, &val("s3cret-value")).unwrap();
        let row = rows.get(&t, &e, &n).unwrap().unwrap();
        let other_t: TenantName = "evil".parse().unwrap();
        let other_e: ExtensionId = "acme.other".parse().unwrap();
        let other_n: SecretName = "OTHER".parse().unwrap();
        for (t2, e2, n2) in [(&other_t, &e, &n), (&t, &other_e, &n), (&t, &e, &other_n)] {
            rows.put(t2, e2, n2, &row).unwrap();
            let err = s.get(t2, e2, n2).unwrap_err();
            assert!(matches!(err, SecretError::Decrypt { .. }), "{err}");
        }
    }

    #[test]
    fn wrong_key_is_refused_at_open() {
        let rows = Arc::new(MemoryRows::new());
        let key = SecretKey::random();
        SecretStore::new(rows.clone(), &key).unwrap();
        // The first key's check row is kept: the same key opens again, another is refused.
        SecretStore::new(rows.clone(), &key).unwrap();
        let err = SecretStore::new(rows, &SecretKey::random()).unwrap_err();
        assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains(":memory:"), "{err}");
    }
}
