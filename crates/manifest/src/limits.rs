//! `[limits]`: profiles, presets and the resolved limits of an install.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use crate::units::ByteSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    Strict,
    Standard,
    Relaxed,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Profile::Strict),
            "standard" => Ok(Profile::Standard),
            "relaxed" => Ok(Profile::Relaxed),
            _ => Err("profile must be \"strict\", \"standard\" or \"relaxed\"".into()),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Strict => "strict",
            Profile::Standard => "standard",
            Profile::Relaxed => "relaxed",
        })
    }
}

/// Concrete limits for one extension, after profile presets and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memories and tables of one instance, together.
    pub max_memory: ByteSize,
    /// Wall-clock time of one call, including time blocked in host calls.
    pub max_execution_time: Duration,
    /// Calls in flight at once; more are refused as busy, never queued without bound.
    pub max_concurrent_calls: u32,
    /// Fuel per call; `None` = no fuel metering (time still bounds the call).
    pub max_fuel: Option<NonZeroU64>,
    pub max_request_bytes: ByteSize,
    pub max_response_bytes: ByteSize,
}

impl Profile {
    /// The SPEC's preset table. Request/response sizes are not in that table: 1 / 5 / 32 MiB.
    pub const fn preset(self) -> Limits {
        match self {
            Profile::Strict => Limits {
                max_memory: ByteSize::mib(16),
                max_execution_time: Duration::from_secs(1),
                max_concurrent_calls: 4,
                max_fuel: None,
                max_request_bytes: ByteSize::mib(1),
                max_response_bytes: ByteSize::mib(1),
            },
            Profile::Standard => Limits {
                max_memory: ByteSize::mib(64),
                max_execution_time: Duration::from_secs(5),
                max_concurrent_calls: 16,
                max_fuel: None,
                max_request_bytes: ByteSize::mib(5),
                max_response_bytes: ByteSize::mib(5),
            },
            Profile::Relaxed => Limits {
                max_memory: ByteSize::mib(256),
                max_execution_time: Duration::from_secs(30),
                max_concurrent_calls: 64,
                max_fuel: None,
                max_request_bytes: ByteSize::mib(32),
                max_response_bytes: ByteSize::mib(32),
            },
        }
    }
}

/// What a manifest's `[limits]` asks for; unset values come from the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestedLimits {
    pub profile: Option<Profile>,
    pub max_memory: Option<ByteSize>,
    pub max_execution_time: Option<Duration>,
    pub max_concurrent_calls: Option<u32>,
    /// `Some(0)` is an explicit "no fuel metering".
    pub max_fuel: Option<u64>,
    pub max_request_bytes: Option<ByteSize>,
    pub max_response_bytes: Option<ByteSize>,
}

impl RequestedLimits {
    /// Applies overrides on top of the profile's preset (`default_profile` when none is named).
    pub fn resolve(&self, default_profile: Profile) -> Limits {
        let base = self.profile.unwrap_or(default_profile).preset();
        Limits {
            max_memory: self.max_memory.unwrap_or(base.max_memory),
            max_execution_time: self.max_execution_time.unwrap_or(base.max_execution_time),
            max_concurrent_calls: self
                .max_concurrent_calls
                .unwrap_or(base.max_concurrent_calls),
            max_fuel: match self.max_fuel {
                Some(f) => NonZeroU64::new(f),
                None => base.max_fuel,
            },
            max_request_bytes: self.max_request_bytes.unwrap_or(base.max_request_bytes),
            max_response_bytes: self.max_response_bytes.unwrap_or(base.max_response_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_spec_table() {
        let s = Profile::Strict.preset();
        assert_eq!(
            (s.max_memory, s.max_execution_time, s.max_concurrent_calls),
            (ByteSize::mib(16), Duration::from_secs(1), 4)
        );
        let s = Profile::Standard.preset();
        assert_eq!(
            (s.max_memory, s.max_execution_time, s.max_concurrent_calls),
            (ByteSize::mib(64), Duration::from_secs(5), 16)
        );
        let s = Profile::Relaxed.preset();
        assert_eq!(
            (s.max_memory, s.max_execution_time, s.max_concurrent_calls),
            (ByteSize::mib(256), Duration::from_secs(30), 64)
        );
    }

    #[test]
    fn overrides_apply_over_the_profile() {
        let r = RequestedLimits {
            profile: Some(Profile::Strict),
            max_memory: Some(ByteSize::mib(32)),
            max_fuel: Some(1000),
            ..Default::default()
        };
        let l = r.resolve(Profile::Relaxed);
        assert_eq!(l.max_memory, ByteSize::mib(32));
        assert_eq!(l.max_execution_time, Duration::from_secs(1));
        assert_eq!(l.max_fuel, NonZeroU64::new(1000));
        let l = RequestedLimits::default().resolve(Profile::Relaxed);
        assert_eq!(l, Profile::Relaxed.preset());
        let l = RequestedLimits {
            max_fuel: Some(0),
            ..Default::default()
        }
        .resolve(Profile::Standard);
        assert_eq!(l.max_fuel, None);
    }
}
