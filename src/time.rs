//! Time as the record keeps it: microseconds since the epoch, written as FHIR instants, and FHIR
//! dates as ranges (a value's precision implies the span it covers, "2025-01" is all of January,
//! which is what date search compares: conformance §2.2).

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// An inclusive range in microseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

pub const OPEN_LO: i64 = i64::MIN / 2;
pub const OPEN_HI: i64 = i64::MAX / 2;

fn day_start(d: NaiveDate) -> Option<i64> {
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?).timestamp_micros())
}

/// Parses a FHIR date, dateTime or instant into the range it denotes.
pub fn parse_range(s: &str) -> Option<Range> {
    let s = s.trim();
    match s.len() {
        4 => {
            let y: i32 = s.parse().ok()?;
            let a = NaiveDate::from_ymd_opt(y, 1, 1)?;
            let b = NaiveDate::from_ymd_opt(y + 1, 1, 1)?;
            Some(Range { lo: day_start(a)?, hi: day_start(b)? - 1 })
        }
        7 => {
            let a = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?;
            let b = a.checked_add_months(Months::new(1))?;
            Some(Range { lo: day_start(a)?, hi: day_start(b)? - 1 })
        }
        10 => {
            let a = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let lo = day_start(a)?;
            Some(Range { lo, hi: lo + 86_400_000_000 - 1 })
        }
        _ => parse_datetime_range(s),
    }
}

fn parse_datetime_range(s: &str) -> Option<Range> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let lo = t.timestamp_micros();
        // A value given to the second covers that whole second; finer values are points.
        let hi = if s.contains('.') { lo } else { lo + 999_999 };
        return Some(Range { lo, hi });
    }
    // Minute precision with a zone ("2025-01-01T10:00Z") is common in search values.
    let (head, zone) = split_zone(s)?;
    let t = NaiveDateTime::parse_from_str(head, "%Y-%m-%dT%H:%M").ok()?;
    let t = DateTime::parse_from_rfc3339(&format!("{}{zone}", t.format("%Y-%m-%dT%H:%M:%S"))).ok()?;
    let lo = t.timestamp_micros();
    Some(Range { lo, hi: lo + 60_000_000 - 1 })
}

fn split_zone(s: &str) -> Option<(&str, &str)> {
    if let Some(head) = s.strip_suffix('Z') {
        return Some((head, "Z"));
    }
    let i = s.rfind(['+', '-'])?;
    (i > 10).then(|| (&s[..i], &s[i..]))
}

/// An instant as FHIR renders it: `2025-01-02T10:00:00.123Z`.
pub fn format_instant(micros: i64) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// An HTTP date for `Last-Modified`.
pub fn format_http_date(micros: i64) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        None => "Thu, 01 Jan 1970 00:00:00 GMT".to_string(),
    }
}

pub fn parse_http_date(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc2822(s).ok().map(|t| t.timestamp_micros())
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let d = Utc::now().date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_implies_range() {
        let y = parse_range("2025").unwrap();
        let m = parse_range("2025-02").unwrap();
        let d = parse_range("2025-02-28").unwrap();
        assert!(y.lo <= m.lo && m.hi <= y.hi);
        assert_eq!(d.hi, m.hi);
        assert_eq!(m.hi - m.lo + 1, 28 * 86_400_000_000);
        let s = parse_range("2025-02-28T10:00:00Z").unwrap();
        assert_eq!(s.hi - s.lo, 999_999);
        let min = parse_range("2025-02-28T10:00+01:00").unwrap();
        assert_eq!(min.lo, parse_range("2025-02-28T09:00:00Z").unwrap().lo);
        assert!(parse_range("2025-13").is_none());
        assert!(parse_range("2025-02-30").is_none());
        assert!(parse_range("yesterday").is_none());
    }

    #[test]
    fn instants_round_trip() {
        let t = parse_range("2025-01-02T10:00:00.123Z").unwrap();
        assert_eq!(format_instant(t.lo), "2025-01-02T10:00:00.123Z");
    }
}
