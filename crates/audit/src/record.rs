//! One audit record: what happened, to which extension, for whom, and how it ended.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sanitize::{MAX_FIELD_BYTES, is_clean, sanitize, sanitize_display};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// One call into an extension (its outcome says how it ended).
    Call,
    /// A call about to change something that outlives it (its first key-value write, outgoing
    /// request or socket, or, for a process or a read-write folder, its start), stored before
    /// the change is made: a call the service did not live to finish (`kill -9`, a power
    /// loss) is still on the trail. Its `call` record follows when it ends.
    CallStart,
    /// A capability use that was refused (egress, file, secret, ...).
    Denial,
    /// A capability use that was allowed (once per capability and target per call).
    Grant,
    /// A resource limit that stopped a call (time, fuel, memory, size, concurrency).
    Limit,
    Install,
    Upgrade,
    Uninstall,
    Publish,
    /// A bundle or signature that failed verification (on install or on load).
    VerificationFailure,
    /// A verified bundle loaded (compiled, pre-instantiated) for use.
    Load,
    /// The audit log repaired its own end: what an append had written after the last committed
    /// record before a crash (or a full disk) stopped it, complete lines the head never named
    /// and/or a torn last line, was set aside in `audit.torn`. Written by the log itself, so
    /// the repair is part of the chain.
    Recovery,
    /// A host that could not start (its message says why): recorded when the audit log
    /// opened but a later part of the host (runtime, storage, key files) did not.
    Start,
    /// A tenant was created (with its first API key, whose hash alone is kept).
    Tenant,
    /// The operator replaced the trust bundle; installs are verified again on their next call.
    TrustReload,
    /// A secret of an install was set or removed (its name is the target; its value is never
    /// recorded).
    Secret,
    /// The operator console: a sign-in (outcome `ok`), one refused (`denied`: a wrong token),
    /// or a sign-out. Its message says which; the token is never recorded.
    Session,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Call => "call",
            Event::CallStart => "call-start",
            Event::Denial => "denial",
            Event::Grant => "grant",
            Event::Limit => "limit",
            Event::Install => "install",
            Event::Upgrade => "upgrade",
            Event::Uninstall => "uninstall",
            Event::Publish => "publish",
            Event::VerificationFailure => "verification-failure",
            Event::Load => "load",
            Event::Recovery => "recovery",
            Event::Start => "start",
            Event::Tenant => "tenant",
            Event::TrustReload => "trust-reload",
            Event::Session => "session",
            Event::Secret => "secret",
        }
    }
}

/// How the event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// The extension (or the host on its behalf) returned an error.
    Error,
    /// The guest trapped.
    Trap,
    /// The execution-time limit was reached.
    Timeout,
    MemoryLimit,
    FuelExhausted,
    /// An input, output, body or bundle over its size cap.
    TooLarge,
    /// Refused because the concurrency limit was reached.
    Busy,
    /// Refused by a capability check.
    Denied,
    /// Refused as malformed or unverifiable (bad bundle, bad signature, bad input).
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory-limit",
            Outcome::FuelExhausted => "fuel-exhausted",
            Outcome::TooLarge => "too-large",
            Outcome::Busy => "busy",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A capability decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Event, Outcome, Decision);

/// One audit record (SPEC section 8).
///
/// Built with [`Record::new`] and the `with_*` methods; every text value passes through
/// [`crate::sanitize`] on the way in, so a `Record` can never hold a newline, a control
/// character or an over-long field, whoever supplied the text. Records read back from a log are
/// checked for the same (see [`crate::is_clean`]) and refused otherwise.
///
/// Serialized as a JSON object with the fields in the order below; a field with no value is
/// written as `null` (never left out), so a record has exactly one encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRecord")]
pub struct Record {
    // Shared, not copied: every record of an install carries its identity, and every record
    // of one moment its time (a call's records are renewed from a template: `Record::renew`).
    #[serde(serialize_with = "text")]
    time: Arc<str>,
    request_id: String,
    #[serde(serialize_with = "some_text")]
    tenant: Option<Arc<str>>,
    #[serde(serialize_with = "some_text")]
    extension: Option<Arc<str>>,
    #[serde(serialize_with = "some_text")]
    version: Option<Arc<str>>,
    #[serde(serialize_with = "some_text")]
    content_hash: Option<Arc<str>>,
    event: Event,
    capability: Option<String>,
    target: Option<String>,
    decision: Option<Decision>,
    duration_ms: Option<u64>,
    fuel: Option<u64>,
    memory_peak_bytes: Option<u64>,
    egress_bytes: Option<u64>,
    outcome: Outcome,
    message: Option<String>,
}

fn text<S: serde::Serializer>(t: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t)
}

fn some_text<S: serde::Serializer>(t: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&**t),
        None => s.serialize_none(),
    }
}

/// What the target of a record standing for several requests starts with
/// ([`Record::with_folded_requests`]).
pub const FOLDED_PREFIX: &str = "requests: ";

/// How many bytes of ids, with a space after each, a record names at most
/// ([`Record::with_folded_requests`]).
pub const MAX_FOLDED_BYTES: usize = MAX_FIELD_BYTES - FOLDED_PREFIX.len();

/// Seconds from the epoch to the last second of year 9999, the last instant RFC 3339 can write.
const MAX_TIME_SECS: u64 = 253_402_300_799;

/// A time as records write it: RFC 3339 in UTC with milliseconds, so that two such texts
/// compare as their times do.
pub fn format_time(t: SystemTime) -> String {
    // Clamp a clock before 1970 or after 9999 instead of failing to write the record.
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let since = since.min(Duration::new(MAX_TIME_SECS, 999_999_999));
    // Written by hand: through `humantime`'s `Display`, formatting the time was the largest
    // single cost of making a call's record (by perf); the tests check it writes the same.
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = String::with_capacity(24);
    let mut put = |n: u64, width: u32, after: char| {
        for place in (0..width).rev() {
            let digit = (n / 10u64.pow(place)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        out.push(after);
    };
    put(year, 4, '-');
    put(month, 2, '-');
    put(day, 2, 'T');
    put(of_day / 3600, 2, ':');
    put(of_day / 60 % 60, 2, ':');
    put(of_day % 60, 2, '.');
    put(u64::from(since.subsec_millis()), 3, 'Z');
    out
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A record's time stamp, made once for the records of one moment (a call's end writes
/// several, in one batch): formatting a time is a good part of making a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Arc<str>);

impl Stamp {
    pub fn now() -> Stamp {
        // The last stamp made on this thread, and the millisecond it is of: the calls of one
        // millisecond (a busy host makes dozens) share its text.
        thread_local! {
            static LAST: std::cell::RefCell<Option<(Duration, Stamp)>> =
                const { std::cell::RefCell::new(None) };
        }
        let now = SystemTime::now();
        let fresh = || Stamp(format_time(now).into());
        let Ok(since) = now.duration_since(UNIX_EPOCH) else {
            return fresh();
        };
        let ms = Duration::new(since.as_secs(), since.subsec_millis() * 1_000_000);
        // Made afresh while the thread's locals are being torn down (a record written from
        // a destructor).
        LAST.try_with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((at, stamp)) if *at == ms => stamp.clone(),
                _ => {
                    let stamp = fresh();
                    *last = Some((ms, stamp.clone()));
                    stamp
                }
            }
        })
        .unwrap_or_else(|_| fresh())
    }
}

impl Record {
    /// A new record for `event` and `request_id` that keeps this record's tenant, extension,
    /// version and content hash (already sanitized) and nothing else: a per-extension template
    /// is built once at load and stamped for every call.
    pub fn renew(&self, event: Event, request_id: &str) -> Record {
        self.renew_at(event, request_id, &Stamp::now())
    }

    /// [`Record::renew`], stamped `at`.
    pub fn renew_at(&self, event: Event, request_id: &str, at: &Stamp) -> Record {
        Record {
            tenant: self.tenant.clone(),
            extension: self.extension.clone(),
            version: self.version.clone(),
            content_hash: self.content_hash.clone(),
            ..Record::blank(event, sanitize(request_id), Arc::clone(&at.0))
        }
    }

    /// A record of `event` for the request `request_id`, stamped now.
    ///
    /// Defaults: every optional field empty; outcome `denied` for [`Event::Denial`], `invalid`
    /// for [`Event::VerificationFailure`], `error` for [`Event::Limit`] (set the specific limit
    /// with [`Record::with_outcome`]), and `ok` otherwise.
    pub fn new(event: Event, request_id: impl fmt::Display) -> Record {
        Record::blank(
            event,
            sanitize_display(&request_id),
            format_time(SystemTime::now()).into(),
        )
    }

    /// `request_id` sanitized already.
    fn blank(event: Event, request_id: String, time: Arc<str>) -> Record {
        let outcome = match event {
            Event::Denial => Outcome::Denied,
            Event::VerificationFailure => Outcome::Invalid,
            Event::Limit => Outcome::Error,
            _ => Outcome::Ok,
        };
        Record {
            time,
            request_id,
            tenant: None,
            extension: None,
            version: None,
            content_hash: None,
            event,
            capability: None,
            target: None,
            decision: None,
            duration_ms: None,
            fuel: None,
            memory_peak_bytes: None,
            egress_bytes: None,
            outcome,
            message: None,
        }
    }

    /// Replaces the time stamp (UTC, millisecond precision; clamped to 1970..=9999).
    pub fn at(mut self, time: SystemTime) -> Record {
        self.time = format_time(time).into();
        self
    }
    pub fn with_tenant(mut self, tenant: impl fmt::Display) -> Record {
        self.tenant = Some(sanitize_display(&tenant).into());
        self
    }
    pub fn with_extension(mut self, id: impl fmt::Display) -> Record {
        self.extension = Some(sanitize_display(&id).into());
        self
    }
    pub fn with_version(mut self, version: impl fmt::Display) -> Record {
        self.version = Some(sanitize_display(&version).into());
        self
    }
    /// The bundle's content hash, e.g. `sha256:<hex>`.
    pub fn with_content_hash(mut self, hash: impl fmt::Display) -> Record {
        self.content_hash = Some(sanitize_display(&hash).into());
        self
    }
    /// The capability involved, e.g. `http`, `fs`, `kv`, `secret`.
    pub fn with_capability(mut self, capability: impl fmt::Display) -> Record {
        self.capability = Some(sanitize_display(&capability));
        self
    }
    /// What the capability was used on: a host, a path, a key name (never a secret value).
    pub fn with_target(mut self, target: impl fmt::Display) -> Record {
        self.target = Some(sanitize_display(&target));
        self
    }
    pub fn with_decision(mut self, decision: Decision) -> Record {
        self.decision = Some(decision);
        self
    }
    /// The same record, stamped now: for a change recorded once it took effect, which can be
    /// seconds after the record was begun (a commit waiting on a slow disk).
    pub fn stamped_now(mut self) -> Record {
        self.time = Stamp::now().0;
        self
    }
    /// Wall-clock duration, stored in whole milliseconds (saturating).
    pub fn with_duration(self, duration: Duration) -> Record {
        self.with_duration_ms(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn with_duration_ms(mut self, ms: u64) -> Record {
        self.duration_ms = Some(ms);
        self
    }
    pub fn with_fuel(mut self, fuel: u64) -> Record {
        self.fuel = Some(fuel);
        self
    }
    pub fn with_memory_peak_bytes(mut self, bytes: u64) -> Record {
        self.memory_peak_bytes = Some(bytes);
        self
    }
    pub fn with_egress_bytes(mut self, bytes: u64) -> Record {
        self.egress_bytes = Some(bytes);
        self
    }
    pub fn with_outcome(mut self, outcome: Outcome) -> Record {
        self.outcome = outcome;
        self
    }
    /// Free text: an error message, a reason for a denial. Never put secret values here.
    pub fn with_message(mut self, message: impl fmt::Display) -> Record {
        self.message = Some(sanitize_display(&message));
        self
    }

    /// A record that stands for several requests (a summary of repeated refusals) names them,
    /// besides its own `request_id`, in its target: [`FOLDED_PREFIX`] then the ids, separated
    /// by spaces, so that a search by request id finds them ([`Record::folded_requests`]).
    /// Only ids that fit the field whole are named (`ids` past [`MAX_FOLDED_BYTES`] are left
    /// out); each is sanitized, and one with a space in it is left out too.
    pub fn with_folded_requests<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Record {
        let mut target = String::from(FOLDED_PREFIX);
        for id in ids {
            let id = sanitize_display(&id);
            if id.is_empty() || id.contains(' ') {
                continue;
            }
            if target.len() + id.len() + 1 > MAX_FIELD_BYTES {
                break;
            }
            if target.len() > FOLDED_PREFIX.len() {
                target.push(' ');
            }
            target.push_str(&id);
        }
        self.target = Some(target);
        self
    }

    /// The requests a summary record stands for besides its own (see
    /// [`Record::with_folded_requests`]); none for other records. Only a call or limit record
    /// without a capability can be one: the target of a grant, denial or limit of a capability
    /// is the extension's choice (a key, a host name), and must not pass for a list.
    pub fn folded_requests(&self) -> impl Iterator<Item = &str> {
        let summary = matches!(self.event, Event::Call | Event::Limit) && self.capability.is_none();
        self.target
            .as_deref()
            .filter(|_| summary)
            .and_then(|t| t.strip_prefix(FOLDED_PREFIX))
            .unwrap_or_default()
            .split(' ')
            .filter(|id| !id.is_empty())
    }

    /// The error and its causes as the message: `what: cause: cause`, leaving out a cause the
    /// text before it already quotes.
    pub fn with_error(self, error: &(dyn std::error::Error + 'static)) -> Record {
        self.with_message(warden_call::text::chain(error))
    }

    /// RFC 3339, UTC, milliseconds: `2025-01-31T12:00:00.123Z`.
    pub fn time(&self) -> &str {
        &self.time
    }
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    pub fn content_hash(&self) -> Option<&str> {
        self.content_hash.as_deref()
    }
    pub fn event(&self) -> Event {
        self.event
    }
    pub fn capability(&self) -> Option<&str> {
        self.capability.as_deref()
    }
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }
    pub fn duration_ms(&self) -> Option<u64> {
        self.duration_ms
    }
    pub fn fuel(&self) -> Option<u64> {
        self.fuel
    }
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.memory_peak_bytes
    }
    pub fn egress_bytes(&self) -> Option<u64> {
        self.egress_bytes
    }
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// A record as parsed from JSON, before its text is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    time: String,
    request_id: String,
    tenant: Option<String>,
    extension: Option<String>,
    version: Option<String>,
    content_hash: Option<String>,
    event: Event,
    capability: Option<String>,
    target: Option<String>,
    decision: Option<Decision>,
    duration_ms: Option<u64>,
    fuel: Option<u64>,
    memory_peak_bytes: Option<u64>,
    egress_bytes: Option<u64>,
    outcome: Outcome,
    message: Option<String>,
}

impl TryFrom<RawRecord> for Record {
    type Error = String;

    fn try_from(r: RawRecord) -> Result<Record, String> {
        let canonical_time = humantime::parse_rfc3339(&r.time)
            .ok()
            .map(format_time)
            .is_some_and(|t| t == r.time);
        if !canonical_time {
            return Err("`time` is not an RFC 3339 UTC time with milliseconds".into());
        }
        let text = [
            ("request_id", Some(&r.request_id)),
            ("tenant", r.tenant.as_ref()),
            ("extension", r.extension.as_ref()),
            ("version", r.version.as_ref()),
            ("content_hash", r.content_hash.as_ref()),
            ("capability", r.capability.as_ref()),
            ("target", r.target.as_ref()),
            ("message", r.message.as_ref()),
        ];
        for (name, value) in text {
            if value.is_some_and(|v| !is_clean(v)) {
                return Err(format!(
                    "`{name}` holds unescaped control characters or is too long"
                ));
            }
        }
        Ok(Record {
            time: r.time.into(),
            request_id: r.request_id,
            tenant: r.tenant.map(Arc::from),
            extension: r.extension.map(Arc::from),
            version: r.version.map(Arc::from),
            content_hash: r.content_hash.map(Arc::from),
            event: r.event,
            capability: r.capability,
            target: r.target,
            decision: r.decision,
            duration_ms: r.duration_ms,
            fuel: r.fuel,
            memory_peak_bytes: r.memory_peak_bytes,
            egress_bytes: r.egress_bytes,
            outcome: r.outcome,
            message: r.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_written_as_humantime_writes_it() {
        let humantime = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        // Leap days and century years, the ends of the range, and a spread of others.
        let mut times = vec![
            at(0, 0),
            at(951_782_400, 0),           // 2000-02-29
            at(951_868_799, 999_999_999), // 2000-02-29T23:59:59.999
            at(4_107_456_000, 0),         // 2100-02-28
            at(4_107_542_400, 1_000_000), // 2100-03-01
            at(1_709_164_800, 500_000),   // 2024-02-29
            at(MAX_TIME_SECS, 999_999_999),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(at(
                x % (MAX_TIME_SECS + 1),
                (x >> 32) as u32 % 1_000_000_000,
            ));
        }
        for t in times {
            assert_eq!(format_time(t), humantime(t), "{t:?}");
        }
    }

    #[test]
    fn records_renewed_at_one_stamp_share_it() {
        let template = Record::new(Event::Call, "t").with_tenant("acme");
        let stamp = Stamp::now();
        let a = template.renew_at(Event::Grant, "r", &stamp);
        let b = template.renew_at(Event::Call, "r", &stamp);
        assert_eq!(a.time(), b.time());
        assert_eq!((a.tenant(), a.request_id()), (Some("acme"), "r"));
    }

    #[test]
    fn a_record_stamped_again_carries_the_time_it_was_stamped() {
        let begun = Record::new(Event::Uninstall, "u").at(UNIX_EPOCH);
        let before = format_time(SystemTime::now());
        let done = begun.with_tenant("acme").stamped_now();
        assert!(done.time() >= before.as_str(), "{} < {before}", done.time());
        assert_eq!(done.tenant(), Some("acme"));
    }

    #[test]
    fn time_is_rfc3339_millis_utc() {
        let r = Record::new(Event::Call, "r1").at(UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(r.time(), "1970-01-01T00:00:01.500Z");
        let r = Record::new(Event::Call, "r1").at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(r.time(), "1970-01-01T00:00:00.000Z");
        let r = Record::new(Event::Call, "r1").at(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4));
        assert_eq!(r.time(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn only_a_summary_without_capability_names_other_requests() {
        let summary = Record::new(Event::Call, "last").with_folded_requests(["a", "b c", "", "d"]);
        assert_eq!(summary.target(), Some("requests: a d"));
        assert_eq!(summary.folded_requests().collect::<Vec<_>>(), ["a", "d"]);
        // An extension's choice of key or host name is no list of requests.
        let denial = Record::new(Event::Denial, "mine")
            .with_capability("kv")
            .with_target("requests: someone-else");
        assert_eq!(denial.folded_requests().count(), 0);
        let grant = Record::new(Event::Call, "mine")
            .with_capability("http")
            .with_target("requests: someone-else");
        assert_eq!(grant.folded_requests().count(), 0);
        assert_eq!(Record::new(Event::Call, "x").folded_requests().count(), 0);
    }

    #[test]
    fn default_outcomes_follow_the_event() {
        assert_eq!(Record::new(Event::Call, "r").outcome(), Outcome::Ok);
        assert_eq!(Record::new(Event::Denial, "r").outcome(), Outcome::Denied);
        assert_eq!(Record::new(Event::Limit, "r").outcome(), Outcome::Error);
        assert_eq!(
            Record::new(Event::VerificationFailure, "r").outcome(),
            Outcome::Invalid
        );
    }

    #[test]
    fn json_round_trip_with_every_field() {
        let r = Record::new(Event::VerificationFailure, "req-1")
            .with_tenant("acme")
            .with_extension("hello")
            .with_version("1.2.3")
            .with_content_hash("sha256:00")
            .with_capability("http")
            .with_target("example.com:443")
            .with_decision(Decision::Deny)
            .with_duration(Duration::from_micros(2_500))
            .with_fuel(7)
            .with_memory_peak_bytes(65536)
            .with_egress_bytes(12)
            .with_message("nope");
        assert_eq!(r.outcome(), Outcome::Invalid);
        assert_eq!(r.duration_ms(), Some(2));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""event":"verification-failure""#), "{json}");
        assert!(json.contains(r#""decision":"deny""#), "{json}");
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn empty_fields_are_written_as_null() {
        let r = Record::new(Event::Call, "r").at(UNIX_EPOCH);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"time":"1970-01-01T00:00:00.000Z","request_id":"r","tenant":null,"extension":null,"version":null,"content_hash":null,"event":"call","capability":null,"target":null,"decision":null,"duration_ms":null,"fuel":null,"memory_peak_bytes":null,"egress_bytes":null,"outcome":"ok","message":null}"#
        );
    }

    #[test]
    fn unclean_text_in_json_is_refused() {
        let good = serde_json::to_string(&Record::new(Event::Call, "r")).unwrap();
        let bad = good.replace(r#""message":null"#, r#""message":"a\u001b[2Jb""#);
        let e = serde_json::from_str::<Record>(&bad).unwrap_err();
        assert!(e.to_string().contains("`message`"), "{e}");
        let bad = good.replace(r#""outcome""#, r#""extra":1,"outcome""#);
        assert!(serde_json::from_str::<Record>(&bad).is_err());
        let bad = good.replace(".", ",");
        assert!(serde_json::from_str::<Record>(&bad).is_err());
    }
}

#[cfg(test)]
mod renew_tests {
    use super::*;

    #[test]
    fn a_stamp_is_the_time_now_shared_within_its_millisecond() {
        for _ in 0..1000 {
            let before = format_time(SystemTime::now());
            let a = Stamp::now();
            let b = Stamp::now();
            let after = format_time(SystemTime::now());
            assert!(before <= a.0.to_string() && a.0.to_string() <= after);
            assert!(a.0 <= b.0 && b.0.to_string() <= after, "{a:?} {b:?}");
            if a.0 == b.0 {
                // One text, not two copies.
                assert!(Arc::ptr_eq(&a.0, &b.0));
            }
        }
    }

    #[test]
    fn renew_keeps_only_the_identity_fields() {
        let t = Record::new(Event::Load, "a")
            .with_tenant("t\n1")
            .with_extension("acme.x")
            .with_version("1.0.0")
            .with_content_hash("sha256:00")
            .with_message("load message")
            .with_duration_ms(5);
        let r = t.renew(Event::Call, "req\u{1b}");
        assert_eq!(r.event(), Event::Call);
        assert_eq!(r.request_id(), "req\\u{1b}");
        assert_eq!(
            (r.tenant(), r.extension(), r.version()),
            (Some("t\\n1"), Some("acme.x"), Some("1.0.0"))
        );
        assert_eq!(r.content_hash(), Some("sha256:00"));
        assert_eq!((r.message(), r.duration_ms()), (None, None));
        assert_eq!(r.outcome(), Outcome::Ok);
    }
}
