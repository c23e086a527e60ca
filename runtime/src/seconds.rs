//! Seconds: a [`Duration`] in JSON as people write it, `5` or `0.5` (seconds). serde's own form,
//! `{"secs": 5, "nanos": 0}`, is read too: records written before hold it. `#[serde(with =
//! "corral_runtime::seconds")]` reads and writes seconds; a field whose records older servers
//! must still read (a session's spec in the registry) takes only `deserialize_with`, and is
//! still written in serde's form.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Writes seconds (a JSON number, fractions allowed).
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Reads a duration from a number of seconds (finite, ≥ 0, at most `u64::MAX` seconds) or from
/// serde's `{"secs", "nanos"}`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Seconds(f64),
        Serde {
            secs: u64,
            #[serde(default)]
            nanos: u32,
        },
    }
    match Form::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a duration: seconds (e.g. 5 or 0.5)"))?
    {
        Form::Seconds(s) => Duration::try_from_secs_f64(s).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s} is not a duration in seconds (finite and not negative)"
            ))
        }),
        Form::Serde { secs, nanos } => {
            Ok(Duration::new(secs, 0) + Duration::from_nanos(nanos.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "deserialize")]
        d: Duration,
    }

    fn read(json: &str) -> Result<Duration, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn seconds_and_serde_s_form_both_read() {
        assert_eq!(read(r#"{"d": 5}"#), Ok(Duration::from_secs(5)));
        assert_eq!(read(r#"{"d": 0.25}"#), Ok(Duration::from_millis(250)));
        assert_eq!(
            read(r#"{"d": {"secs": 2, "nanos": 500000000}}"#),
            Ok(Duration::from_millis(2500))
        );
        let what = |json| read(json).unwrap_err();
        assert!(
            what(r#"{"d": -1}"#).contains("not negative"),
            "{}",
            what(r#"{"d": -1}"#)
        );
        assert!(what(r#"{"d": "5s"}"#).contains("expected a duration"));
        assert!(what(r#"{"d": 1e300}"#).contains("not a duration"));
    }
}
