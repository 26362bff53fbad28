//! Dates and times as a patient in the UK reads them: "12 April 1958", "14:05", in the time the
//! clocks in England show (Europe/London), whatever the server's zone.
//!
//! The UK's rule is fixed by the Summer Time Order 2002 (the EU rule since 1996): British Summer
//! Time, UTC+1, from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
//! October. One zone with one rule is written out here rather than built from a time-zone
//! database crate; the instants shown (entries, sessions, access) are all far later than 1996.

use crate::fhir::time;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use serde_json::Value;

use super::PortalError;

const MONTHS: [&str; 12] = [
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
pub(crate) fn london(t: DateTime<Utc>) -> NaiveDateTime {
    let year = t.year();
    let summer = match (change_instant(year, 3), change_instant(year, 10)) {
        (Some(start), Some(end)) => t >= start && t < end,
        _ => false,
    };
    t.naive_utc() + Duration::hours(if summer { 1 } else { 0 })
}

fn from_micros(micros: i64) -> Option<NaiveDateTime> {
    Utc.timestamp_micros(micros).single().map(london)
}

fn words(d: NaiveDate) -> String {
    format!("{} {} {}", d.day(), MONTHS[d.month0() as usize], d.year())
}

/// The date part of a FHIR date or dateTime (`2025-03-14T10:00:00Z` → `2025-03-14`).
pub(crate) fn date_part(v: &Value) -> String {
    v.as_str().map(|s| s.get(..10).unwrap_or(s).to_string()).unwrap_or_default()
}

/// A FHIR date or dateTime in words: `2025-03-03` → `3 March 2025`. A dateTime is the date it was
/// in England at that moment (`2025-06-30T23:30:00Z` was 1 July there); a year-month or a year
/// alone stays that precise; anything else is shown as it is.
pub(crate) fn long_date(s: &str) -> String {
    if s.len() > 10 {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return words(london(t.with_timezone(&Utc)).date());
        }
    }
    let mut parts = s.get(..10.min(s.len())).unwrap_or(s).split('-');
    let (year, month, day) = (parts.next(), parts.next(), parts.next());
    let month = month.and_then(|m| m.parse::<usize>().ok()).and_then(|m| MONTHS.get(m.checked_sub(1)?));
    let day = day.and_then(|d| d.parse::<u8>().ok());
    match (year, month, day) {
        (Some(y), Some(m), Some(d)) => format!("{d} {m} {y}"),
        (Some(y), Some(m), None) => format!("{m} {y}"),
        _ => s.to_string(),
    }
}

/// A stored instant (microseconds) as the date it was in England: `14 March 2025`.
pub(crate) fn day(micros: i64) -> String {
    from_micros(micros).map(|t| words(t.date())).unwrap_or_default()
}

/// A stored instant as the date it was in England, as a form's date field holds it: `2025-03-14`.
pub(crate) fn iso_day(micros: i64) -> String {
    from_micros(micros).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// A stored instant as the date and clock time in England: `14 March 2025, 10:05`.
pub(crate) fn minute(micros: i64) -> String {
    from_micros(micros).map(|t| format!("{}, {}", words(t.date()), t.format("%H:%M"))).unwrap_or_default()
}

/// A date the patient typed, checked: `YYYY-MM-DD`.
pub(crate) fn parse_day(s: &str, what: &str) -> Result<time::Range, PortalError> {
    let s = s.trim();
    let shaped = s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') && s.as_bytes().get(7) == Some(&b'-');
    match time::parse_range(s) {
        Some(r) if shaped => Ok(r),
        _ => Err(PortalError::Invalid(format!("{what} must be a date such as 2025-03-14"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_micros()).unwrap_or_default()
    }

    #[test]
    fn dates_in_words() {
        assert_eq!(long_date("2025-03-03"), "3 March 2025");
        assert_eq!(long_date("2025-12-31T10:00:00Z"), "31 December 2025");
        assert_eq!(long_date("2025-11"), "November 2025");
        assert_eq!(long_date("2025"), "2025");
        assert_eq!(long_date("2025-13-01"), "2025-13-01");
    }

    #[test]
    fn clocks_in_england() {
        // Winter: GMT.
        assert_eq!(minute(micros("2025-01-15T09:30:00Z")), "15 January 2025, 09:30");
        // 2025's clocks went forward at 01:00 UTC on 30 March and back at 01:00 UTC on 26 October.
        assert_eq!(minute(micros("2025-03-30T00:59:00Z")), "30 March 2025, 00:59");
        assert_eq!(minute(micros("2025-03-30T01:00:00Z")), "30 March 2025, 02:00");
        assert_eq!(minute(micros("2025-10-26T00:59:00Z")), "26 October 2025, 01:59");
        assert_eq!(minute(micros("2025-10-26T01:00:00Z")), "26 October 2025, 01:00");
        // A summer evening in UTC is the next morning's date in England.
        assert_eq!(day(micros("2025-06-30T23:30:00Z")), "1 July 2025");
        assert_eq!(long_date("2025-06-30T23:30:00Z"), "1 July 2025");
        assert_eq!(long_date("2025-06-30T23:30:00+00:00"), "1 July 2025");
    }

    #[test]
    fn typed_dates_are_checked() {
        assert!(parse_day("2025-03-14", "x").is_ok());
        assert!(parse_day("2025", "x").is_err());
        assert!(parse_day("yesterday", "x").is_err());
    }
}
