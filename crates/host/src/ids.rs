//! Request ids: 128 random bits each, hex.
//!
//! Drawn from a buffer of OS randomness refilled every 256 ids, so a call costs no system
//! call; ids stay unpredictable (no counter that would let a tenant see another's call volume).

use rand_core::{OsRng, RngCore};

pub(crate) struct RequestIds(std::sync::Mutex<IdPool>);

struct IdPool {
    buf: [u8; ID_POOL_BYTES],
    used: usize,
}

const ID_BYTES: usize = 16;
const ID_POOL_BYTES: usize = 256 * ID_BYTES;

impl RequestIds {
    pub(crate) fn new() -> Self {
        RequestIds(std::sync::Mutex::new(IdPool {
            buf: [0; ID_POOL_BYTES],
            used: ID_POOL_BYTES,
        }))
    }

    pub(crate) fn next(&self) -> String {
        let Ok(mut pool) = self.0.lock() else {
            let mut b = [0u8; ID_BYTES];
            OsRng.fill_bytes(&mut b);
            return hex::encode(b);
        };
        if pool.used + ID_BYTES > ID_POOL_BYTES {
            OsRng.fill_bytes(&mut pool.buf);
            pool.used = 0;
        }
        let start = pool.used;
        pool.used += ID_BYTES;
        // Each id is used once: overwrite it so it cannot be handed out again.
        let id = to_hex(&pool.buf[start..start + ID_BYTES]);
        pool.buf[start..start + ID_BYTES].fill(0);
        id
    }
}

/// Lowercase hex, as `hex::encode` writes it, in a plain loop: `hex::encode` goes through a
/// char iterator, and cost more than the rest of picking an id.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
    }

    #[test]
    fn request_ids_are_unique_hex_across_refills() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5_000 {
            let id = ids.next();
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(seen.insert(id), "duplicate request id");
        }
    }
}
