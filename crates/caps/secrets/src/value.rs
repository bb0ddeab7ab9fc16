//! A secret value: its bytes are wiped when it is dropped, and it cannot be printed or
//! serialized by accident (Debug and Display say `[REDACTED]`; there is no `Serialize`).

use std::fmt;

use zeroize::Zeroizing;

/// Largest secret value: tokens, keys and certificates fit; anything bigger is not a secret.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's value (UTF-8 text, as `wasi:config/store` hands out strings).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Takes `value`; it is wiped when the returned value is dropped. Longer than
    /// [`MAX_SECRET_BYTES`] is refused (the error names only the size).
    pub fn new(value: String) -> Result<Self, crate::SecretError> {
        let value = Zeroizing::new(value);
        if value.len() > MAX_SECRET_BYTES {
            return Err(crate::SecretError::TooLarge {
                name: "value".into(),
                size: value.len(),
            });
        }
        Ok(SecretValue(value))
    }

    /// Takes bytes that must be UTF-8; on error the bytes are wiped too.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, crate::SecretError> {
        let bytes = Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map_err(|_| crate::SecretError::NotUtf8 {
            name: "value".into(),
        })?;
        Self::new(text.to_string())
    }

    /// The value itself: hand it only to the extension that was granted it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let v = SecretValue::new("hunter2-token".into()).unwrap();
        assert_eq!(format!("{v}"), "[REDACTED]");
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&v)).contains("hunter2"));
        assert_eq!(v.expose(), "hunter2-token");
    }

    #[test]
    fn size_and_utf8_checked_without_quoting() {
        let e = SecretValue::new("x".repeat(MAX_SECRET_BYTES + 1)).unwrap_err();
        assert!(!e.to_string().contains("xxxx"));
        let e = SecretValue::from_bytes(b"abc\xff".to_vec()).unwrap_err();
        assert!(!e.to_string().contains("abc"));
    }
}
