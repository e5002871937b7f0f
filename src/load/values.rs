//! The small value types of playbooks and inventories: durations (`30s`,
//! `5m`, `1h30m`), sizes that are counts or shares (`5`, `"10%"`), and the
//! wave pause (`5m` or `confirm`).
//!
//! Each parses in its `Deserialize` impl, so a bad value is reported by
//! serde-saphyr at the exact line and column of the value, with no second
//! validation pass that would have to find the place again.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A duration written as `90`, `30s`, `5m`, `1h`, `1h30m`, `500ms` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty duration; write e.g. 30s, 5m or 1h".into());
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(seconds)));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad_duration(text));
            }
            let number: u64 = rest[..digits].parse().map_err(|_| bad_duration(text))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let millis = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad_duration(text)),
            };
            total += Duration::from_millis(number.saturating_mul(millis));
        }
        Ok(HumanDuration(total))
    }
}

fn bad_duration(text: &str) -> String {
    format!("`{text}` is not a duration; write a number and a unit: 500ms, 30s, 5m, 1h, 1h30m, 2d")
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut secs = self.0.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m or 1h")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|v| HumanDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A number of hosts, given as a count or as a share of a client's hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    Count(u64),
    /// Percent, 0 < p <= 100.
    Percent(f64),
}

impl Size {
    pub fn parse(text: &str) -> Result<Size, String> {
        let text = text.trim();
        if let Some(number) = text.strip_suffix('%') {
            let percent: f64 = number.trim().parse().map_err(|_| {
                format!("`{text}` is not a share; write a percentage such as \"10%\"")
            })?;
            return Size::percent(percent);
        }
        text.parse::<u64>().map(Size::Count).map_err(|_| {
            format!("`{text}` is neither a count nor a share; write e.g. 5 or \"10%\"")
        })
    }

    fn percent(percent: f64) -> Result<Size, String> {
        if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
            Err(format!(
                "{percent}% is not a share of a client's hosts; it must be between 0% and 100%"
            ))
        } else {
            Ok(Size::Percent(percent))
        }
    }

    /// How many of `total` hosts this is. Shares round down, as Ansible's
    /// `serial` does, so "10%" of 15 hosts is 1 host, never 2.
    pub fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Size::Percent(p) => ((total as f64) * p / 100.0 + 1e-9).floor() as usize,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Count(n) => write!(f, "{n}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Count(n) => serializer.serialize_u64(*n),
            Size::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count such as 5 or a share such as \"10%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size::Count)
                    .map_err(|_| E::custom("a count cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number of hosts; write a count such as 5 or a share such as \"10%\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// What happens between two waves of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    Wait(HumanDuration),
    /// Ask the operator on the terminal (`--yes` answers yes).
    Confirm,
}

impl Default for Pause {
    fn default() -> Self {
        Pause::Wait(HumanDuration(Duration::ZERO))
    }
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pause::Wait(d) => write!(f, "{d}"),
            Pause::Confirm => f.write_str("confirm"),
        }
    }
}

impl Serialize for Pause {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pause {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Pause;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 5m, or \"confirm\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Pause, E> {
                Ok(Pause::Wait(HumanDuration(Duration::from_secs(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Pause, E> {
                if v.trim() == "confirm" {
                    Ok(Pause::Confirm)
                } else {
                    HumanDuration::parse(v).map(Pause::Wait).map_err(|e| {
                        E::custom(format!("{e}, or write `confirm` to ask between waves"))
                    })
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

// The JSON Schema of each value type says what its parser accepts, so an
// editor flags `timeout: 5 minutes` or `waves: [1, "150%"]` as the loader
// would. The patterns follow `HumanDuration::parse` and `Size::parse`.

/// A duration: whole seconds, or numbers with units.
const DURATION_PATTERN: &str = r"^\s*([0-9]+|([0-9]+(ms|s|m|h|d))+)\s*$";

fn duration_schema() -> schemars::Schema {
    schemars::json_schema!({
        "description": "A duration: a number of seconds, or numbers with units ms, s, m, h, d (500ms, 30s, 5m, 1h30m, 2d).",
        "anyOf": [
            { "type": "integer", "minimum": 0 },
            { "type": "string", "pattern": DURATION_PATTERN }
        ]
    })
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        duration_schema()
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of hosts: a count (5), or a share of the client's hosts from 0% to 100% (\"10%\", \"12.5%\").",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*$" },
                { "type": "string", "pattern": r"^\s*(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)\s*%\s*$" }
            ]
        })
    }
}

impl schemars::JsonSchema for Pause {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Pause".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "What happens between two waves: wait a duration (5m), or ask the operator (confirm; --yes answers).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": DURATION_PATTERN },
                { "const": "confirm" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let d = |s: &str| HumanDuration::parse(s).unwrap().0;
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        for bad in ["", "5x", "m5", "1.5h", "-3s", "five minutes"] {
            assert!(
                HumanDuration::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn durations_print_as_written() {
        for s in ["30s", "5m", "1h30m", "500ms", "0s", "2d"] {
            assert_eq!(HumanDuration::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn sizes_are_counts_or_shares() {
        assert_eq!(Size::parse("5").unwrap(), Size::Count(5));
        assert_eq!(Size::parse("10%").unwrap(), Size::Percent(10.0));
        assert_eq!(Size::parse("12.5%").unwrap(), Size::Percent(12.5));
        assert!(Size::parse("101%").is_err());
        assert!(Size::parse("-1%").is_err());
        assert!(Size::parse("ten").is_err());
    }

    #[test]
    fn shares_round_down() {
        assert_eq!(Size::Percent(10.0).of(15), 1);
        assert_eq!(Size::Percent(10.0).of(9), 0);
        assert_eq!(Size::Percent(50.0).of(7), 3);
        assert_eq!(Size::Percent(100.0).of(7), 7);
        assert_eq!(
            Size::Percent(30.0).of(10),
            3,
            "no float error at exact shares"
        );
        assert_eq!(Size::Count(3).of(1), 3);
    }
}
