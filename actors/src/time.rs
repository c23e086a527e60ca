//! Time: how instants cross the API — RFC 3339 strings in UTC with microseconds
//! (`2026-12-04T18:32:28.123456Z`), the form every language parses, instead of serde's
//! `{secs_since_epoch, nanos_since_epoch}` struct. Reading also accepts that old struct, so
//! clients and journals written before the change still decode.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serializer};

/// The old serde form of a `SystemTime`.
#[derive(Deserialize)]
struct Legacy {
    secs_since_epoch: u64,
    #[serde(default)]
    nanos_since_epoch: u32,
}

/// Either form.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Text(String),
    Legacy(Legacy),
}

/// Where [`mono_ms`]'s clock starts, on the monotonic clock and on the wall clock.
fn start() -> &'static (std::time::Instant, SystemTime) {
    static START: std::sync::OnceLock<(std::time::Instant, SystemTime)> =
        std::sync::OnceLock::new();
    START.get_or_init(|| (std::time::Instant::now(), SystemTime::now()))
}

/// Milliseconds on a monotonic clock that starts at 1 (so 0 can mean "never").
pub fn mono_ms() -> u64 {
    start().0.elapsed().as_millis() as u64 + 1
}

/// Sleeps until `at`, or for ever without one: the arm of a `select!` that waits for an
/// optional deadline (a timer that may not be set).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wall-clock time of [`mono_ms`] value `ms`: the same value always gives the same time
/// (the clocks' difference is taken once, when the monotonic one starts).
pub fn wall_of_mono(ms: u64) -> SystemTime {
    start().1 + Duration::from_millis(ms.saturating_sub(1))
}

/// `t` as RFC 3339 (UTC, microseconds).
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// An RFC 3339 time (or the old struct form) from JSON; None if it is neither.
pub fn from_json(v: &serde_json::Value) -> Option<SystemTime> {
    deserialize(v).ok()
}

/// Serializes a `SystemTime` as RFC 3339.
pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

/// Deserializes RFC 3339 or the old struct form.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    match Wire::deserialize(d)? {
        Wire::Text(s) => humantime::parse_rfc3339_weak(&s)
            .map_err(|e| serde::de::Error::custom(format!("time {s:?}: {e}"))),
        Wire::Legacy(l) => Ok(UNIX_EPOCH + Duration::new(l.secs_since_epoch, l.nanos_since_epoch)),
    }
}

/// The same for `Option<SystemTime>` (`null` when absent).
pub mod option {
    use super::*;

    /// Serializes `Some` as RFC 3339, `None` as null.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes null, RFC 3339 or the old struct form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(deserialize_with = "super::deserialize")] SystemTime);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// Durations as seconds (a JSON number, fractions allowed); reading also accepts serde's old
/// `{secs, nanos}` struct.
pub use corral_runtime::seconds as duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        at: SystemTime,
        #[serde(with = "super::option", default)]
        maybe: Option<SystemTime>,
    }

    #[test]
    fn rfc3339_round_trips_and_the_old_form_still_reads() {
        let at = UNIX_EPOCH + Duration::new(1_796_409_044, 246_825_000);
        let t = T {
            at,
            maybe: Some(at),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-12-04T18:30:44.246825Z","maybe":"2026-12-04T18:30:44.246825Z"}"#
        );
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let old =
            r#"{"at":{"secs_since_epoch":1796409044,"nanos_since_epoch":246825000},"maybe":null}"#;
        let back: T = serde_json::from_str(old).unwrap();
        assert_eq!((back.at, back.maybe), (at, None));
        assert!(serde_json::from_str::<T>(r#"{"at":"yesterday"}"#).is_err());
    }

    #[test]
    fn durations_are_seconds_and_the_old_form_still_reads() {
        #[derive(serde::Serialize, Deserialize)]
        struct D {
            #[serde(with = "super::duration")]
            delay: Duration,
        }
        let json = serde_json::to_string(&D {
            delay: Duration::from_millis(1500),
        })
        .unwrap();
        assert_eq!(json, r#"{"delay":1.5}"#);
        let old: D = serde_json::from_str(r#"{"delay":{"secs":2,"nanos":500000000}}"#).unwrap();
        assert_eq!(old.delay, Duration::from_millis(2500));
    }
}
