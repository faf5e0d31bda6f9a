//! Human-readable durations in the config file: `250ms`, `5s`, `1.5s`, `1m`.
//!
//! Every duration key takes a number followed by a unit, with no default
//! unit: a bare `5` is rejected because a reader cannot tell whether it
//! means seconds or milliseconds, and guessing wrong by a factor of 1000 is
//! the kind of mistake that only shows up under load. Fractions are parsed
//! exactly (no floating point), so `0.1s` is exactly 100ms.
//!
//! [`ConfigDuration`] is the serde-facing newtype used by `raw.rs`; because
//! parsing happens inside deserialization, serde_yaml attaches the line and
//! column of the offending value to the error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The units a duration may use, with their length in nanoseconds. The unit
/// is compared against the whole non-numeric tail, so `ms` never matches `m`.
const UNITS: &[(&str, u128)] = &[
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The unit list as shown in error messages.
const UNIT_HELP: &str = "`us`, `ms`, `s`, `m` or `h`";

/// Parses a duration such as `250ms`, `5s`, `1.5s`, `1m`, `1h` or `100us`.
///
/// The error is a complete sentence fit for a config error message.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!(
            "empty duration; write a number and a unit ({UNIT_HELP}), e.g. `5s`"
        ));
    }
    if s.starts_with('-') {
        return Err(format!(
            "duration `{s}` is negative; durations must be >= 0"
        ));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "duration `{s}` does not start with a number; expected e.g. `5s` or `250ms`"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "duration `{s}` has no unit; add one of {UNIT_HELP}, e.g. `{s}s` or `{s}ms`"
        ));
    }
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "duration `{s}` has unknown unit `{unit}`; expected one of {UNIT_HELP}"
        ));
    };

    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("duration `{s}` is not a valid number"));
    }
    let too_large = || format!("duration `{s}` is too large");
    let whole_nanos = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<u128>()
            .ok()
            .and_then(|w| w.checked_mul(unit_nanos))
            .ok_or_else(too_large)?
    };
    // Digits beyond nanosecond precision cannot change the result, so only
    // the first 18 are looked at (keeps the arithmetic inside u128).
    let mut frac_nanos: u128 = 0;
    let mut scale: u128 = 1;
    for digit in fraction.bytes().take(18) {
        frac_nanos = frac_nanos * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    let nanos = whole_nanos
        .checked_add(frac_nanos * unit_nanos / scale)
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    // The remainder of a division by 10^9 always fits in u32.
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// A [`Duration`] deserialized from a string like `5s` (see [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl DurationVisitor {
    /// A bare YAML number: the most common mistake, so the message says
    /// exactly what to write instead.
    fn bare_number<E: de::Error>(n: impl fmt::Display) -> E {
        E::custom(format!(
            "duration `{n}` has no unit; add one of {UNIT_HELP}, e.g. `{n}s` or `{n}ms`"
        ))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a duration such as `5s` or `250ms` (units: {UNIT_HELP})")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(ConfigDuration).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(Self::bare_number(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if v < 0 {
            return Err(E::custom(format!(
                "duration `{v}` is negative; durations must be >= 0"
            )));
        }
        Err(Self::bare_number(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v < 0.0 {
            return Err(E::custom(format!(
                "duration `{v}` is negative; durations must be >= 0"
            )));
        }
        Err(Self::bare_number(v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_valid_durations() {
        let cases: &[(&str, Duration)] = &[
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("100us", Duration::from_micros(100)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("2.s", Duration::from_secs(2)),
            ("0s", Duration::ZERO),
            ("0.0000000019s", Duration::from_nanos(1)),
            ("1.25m", Duration::from_secs(75)),
            (" 30s ", Duration::from_secs(30)),
            ("1.0000000000000000000001s", Duration::from_secs(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_invalid_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("   ", "empty duration"),
            ("-5s", "negative"),
            ("5", "has no unit; add one of `us`, `ms`, `s`, `m` or `h`"),
            ("1.5", "has no unit"),
            ("5d", "unknown unit `d`"),
            ("5 s", "unknown unit ` s`"),
            ("5sec", "unknown unit `sec`"),
            ("s", "does not start with a number"),
            ("1.2.3s", "not a valid number"),
            (".s", "not a valid number"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("18446744073709551616s", "too large"),
        ];
        for (text, want) in cases {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn max_u64_seconds_fits() {
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn deserializes_from_yaml_and_rejects_bare_numbers() {
        let d: ConfigDuration = serde_yaml::from_str("1.5s").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        let err = serde_yaml::from_str::<ConfigDuration>("5").unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        let err = serde_yaml::from_str::<ConfigDuration>("-5").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = serde_yaml::from_str::<ConfigDuration>("[1]").unwrap_err();
        assert!(err.to_string().contains("a duration such as"), "{err}");
    }
}
