//! Timestamps on the wire: RFC 3339 in UTC (`2026-12-02T21:33:17.123456Z`; fractional
//! seconds as chrono's `SecondsFormat::AutoSi` gives them: none, 3, 6 or 9 digits), byte for
//! byte what chrono's own `Serialize` writes.
//!
//! Why not chrono's: it hands serde a `Display` (`collect_str`), which writes the time a
//! digit at a time, and serde_json escape-scans every one of those pieces on its own; a page
//! of 50 messages spent about 6 % of the service's CPU there (perf, `scripts/bench.sh`
//! history). Here the text is made whole first and goes to the serializer as one string.
//! Used with `#[serde(serialize_with = …)]` on the fields of the hot wire shapes (messages,
//! in every history page and live frame); elsewhere chrono's own does the same.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Serializes `at` as RFC 3339 (RFC 3339 §5.6, `Z` for UTC).
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// [`rfc3339`] for an optional time (`null` when absent).
pub fn rfc3339_opt<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_some(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    /// The same text as chrono's own serializer, for every fraction it formats differently.
    #[test]
    fn writes_what_chrono_writes() {
        #[derive(serde::Serialize)]
        struct Ours {
            #[serde(serialize_with = "super::rfc3339")]
            at: chrono::DateTime<chrono::Utc>,
            #[serde(serialize_with = "super::rfc3339_opt")]
            maybe: Option<chrono::DateTime<chrono::Utc>>,
        }
        #[derive(serde::Serialize)]
        struct Chronos {
            at: chrono::DateTime<chrono::Utc>,
            maybe: Option<chrono::DateTime<chrono::Utc>>,
        }
        let base = chrono::Utc
            .with_ymd_and_hms(2026, 12, 2, 21, 33, 17)
            .single();
        let base = base.expect("a valid time");
        let mut times: Vec<_> = [0, 123_000_000, 123_456_000, 123_456_789, 1_000, 999_999_999]
            .into_iter()
            .map(|nanos| base + chrono::Duration::nanoseconds(nanos))
            .collect();
        // A leap second (written as :60) and years outside 0000–9999 (written with a sign).
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .expect("a leap second");
        times.push(chrono::DateTime::from_naive_utc_and_offset(
            leap,
            chrono::Utc,
        ));
        for year in [12_345, -1] {
            let far = chrono::Utc.with_ymd_and_hms(year, 1, 2, 3, 4, 5).single();
            times.push(far.expect("a valid time"));
        }
        for at in times {
            for maybe in [None, Some(at)] {
                let ours = serde_json::to_string(&Ours { at, maybe });
                let chronos = serde_json::to_string(&Chronos { at, maybe });
                assert_eq!(ours.ok(), chronos.ok(), "{at:?}");
            }
        }
    }
}
