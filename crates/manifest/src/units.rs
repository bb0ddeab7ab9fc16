//! Byte sizes (`"64MiB"`) and durations (`"5s"`), as written in manifests and policies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a size or duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// Splits `"64MiB"` into `(64, "MiB")`; digits only, no sign, no spaces, no fractions.
fn split_number(s: &str) -> Result<(u64, &str), UnitError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(UnitError(format!("{s:?} must start with a whole number")));
    }
    let (num, unit) = s.split_at(digits);
    let n = num
        .parse::<u64>()
        .map_err(|_| UnitError(format!("{s:?} is too large")))?;
    Ok((n, unit))
}

/// A size in bytes, written with a unit: `B`, `KiB`, `MiB`, `GiB`, `kB`, `MB`, `GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (n, unit) = split_number(s)?;
        let mult: u64 = match unit {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "" => {
                return Err(UnitError(format!(
                    "{s:?} needs a unit (B, KiB, MiB, GiB, kB, MB, GB)"
                )));
            }
            other => {
                return Err(UnitError(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
                )));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| UnitError(format!("{s:?} is too large")))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

/// A duration written with one unit: `ms`, `s`, `m` or `h` (e.g. `"500ms"`, `"5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Span {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let (n, unit) = split_number(s)?;
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(UnitError(format!("{s:?} needs a unit (ms, s, m, h)"))),
            other => {
                return Err(UnitError(format!(
                    "unknown duration unit {other:?} (use ms, s, m, h)"
                )));
            }
        };
        let ms = n
            .checked_mul(ms_per)
            .ok_or_else(|| UnitError(format!("{s:?} is too large")))?;
        Ok(Span(Duration::from_millis(ms)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(64));
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(1));
        assert_eq!("512KiB".parse::<ByteSize>().unwrap(), ByteSize::kib(512));
        assert_eq!("10kB".parse::<ByteSize>().unwrap(), ByteSize(10_000));
        assert_eq!("0B".parse::<ByteSize>().unwrap(), ByteSize(0));
        for bad in [
            "",
            "64",
            "MiB",
            "-1MiB",
            "1.5MiB",
            " 1MiB",
            "1 MiB",
            "1mib",
            "1MiBx",
            "99999999999999999999B",
            "17179869184GiB",
            "+1B",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn spans() {
        assert_eq!("5s".parse::<Span>().unwrap().0, Duration::from_secs(5));
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("2m".parse::<Span>().unwrap().0, Duration::from_secs(120));
        assert_eq!("1h".parse::<Span>().unwrap().0, Duration::from_secs(3600));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "5sec",
            "1.5s",
            "-1s",
            "18446744073709551615h",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
        assert_eq!("1500ms".parse::<Span>().unwrap().to_string(), "1500ms");
        assert_eq!("30s".parse::<Span>().unwrap().to_string(), "30s");
    }
}
