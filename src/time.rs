//! Time as the record keeps it: microseconds since the epoch, written as FHIR instants, and FHIR
//! dates as ranges (a value's precision implies the span it covers, "2025-01" is all of January,
//! which is what date search compares: conformance §2.2).

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};

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

// England's clocks. The UK's rule is fixed by the Summer Time Order 2002 (the EU rule since
// 1996): British Summer Time, UTC+1, from 01:00 UTC on the last Sunday of March to 01:00 UTC on
// the last Sunday of October. One zone with one rule is written out here rather than built from
// a time-zone database crate; the instants shown (entries, sessions, access) are all far later
// than 1996.

pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// 01:00 UTC on the last Sunday of `month` in `year`: when the UK's clocks change.
fn change_instant(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let last = NaiveDate::from_ymd_opt(year, month + 1, 1)?.pred_opt()?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = last - Duration::days(back.into());
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    Some(Utc.from_utc_datetime(&sunday.and_hms_opt(1, 0, 0)?))
}

/// The wall-clock time in England at a UTC instant.
pub fn london(t: DateTime<Utc>) -> NaiveDateTime {
    let year = t.year();
    let summer = match (change_instant(year, 3), change_instant(year, 10)) {
        (Some(start), Some(end)) => t >= start && t < end,
        _ => false,
    };
    t.naive_utc() + Duration::hours(if summer { 1 } else { 0 })
}

/// A date in words: `12 April 1958`.
pub fn words(d: NaiveDate) -> String {
    format!("{} {} {}", d.day(), MONTHS[d.month0() as usize], d.year())
}

/// An instant as the date and clock time in England: `14 March 2025, 10:05`.
pub fn england_minute(t: DateTime<Utc>) -> String {
    let t = london(t);
    format!("{}, {}", words(t.date()), t.format("%H:%M"))
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
