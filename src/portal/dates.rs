//! Dates and times as a patient in the UK reads them: "12 April 1958", "14:05", in the time the
//! clocks in England show (Europe/London), whatever the server's zone.
//!
//! The clocks' rule itself ([`crate::time::london`]) sits in the bottom layer, so that the record
//! file's summary (portability) shows England's time too.

use crate::fhir::time;
use crate::time::{london, words, MONTHS};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use super::PortalError;

fn from_micros(micros: i64) -> Option<NaiveDateTime> {
    Utc.timestamp_micros(micros).single().map(london)
}

/// The date part of a FHIR date or dateTime, as a date in England: `2025-03-14T10:00:00Z` →
/// `2025-03-14`, but `2025-06-30T23:30:00Z` → `2025-07-01` (00:30 on 1 July there).
pub(crate) fn date_part(v: &Value) -> String {
    let Some(s) = v.as_str() else { return String::new() };
    if s.len() > 10 {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return london(t.with_timezone(&Utc)).date().format("%Y-%m-%d").to_string();
        }
    }
    s.get(..10).unwrap_or(s).to_string()
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
    Utc.timestamp_micros(micros).single().map(crate::time::england_minute).unwrap_or_default()
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

/// A date as typed in the GOV.UK "date input" pattern: three boxes, day, month and year, sent as
/// `<name>-day`, `<name>-month` and `<name>-year`. Kept as typed so a form shown again holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DateInput {
    pub day: String,
    pub month: String,
    pub year: String,
}

/// Which of a date's boxes an error is about (the ones to highlight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePart {
    Day,
    Month,
    Year,
    DayMonth,
    DayYear,
    MonthYear,
    /// The whole date (empty, or not a real date).
    All,
}

/// Why a typed date cannot be used, in the words the GOV.UK pattern uses, and which boxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateError {
    pub part: DatePart,
    pub message: String,
}

impl DateError {
    fn new(part: DatePart, message: String) -> Self {
        DateError { part, message }
    }
    pub fn day(&self) -> bool {
        matches!(self.part, DatePart::Day | DatePart::DayMonth | DatePart::DayYear | DatePart::All)
    }
    pub fn month(&self) -> bool {
        matches!(self.part, DatePart::Month | DatePart::DayMonth | DatePart::MonthYear | DatePart::All)
    }
    pub fn year(&self) -> bool {
        matches!(self.part, DatePart::Year | DatePart::DayYear | DatePart::MonthYear | DatePart::All)
    }
    /// The id of the first box in error, for the error summary's link.
    pub fn first_box(&self) -> &'static str {
        if self.day() {
            "day"
        } else if self.month() {
            "month"
        } else {
            "year"
        }
    }
}

impl From<DateError> for PortalError {
    fn from(e: DateError) -> Self {
        PortalError::Invalid(e.message)
    }
}

/// A month as typed: `3`, `03`, `Mar` or `March` (the GOV.UK pattern accepts names too).
fn month_number(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=12).contains(&n).then_some(n);
    }
    let s = s.to_lowercase();
    let found = MONTHS.iter().position(|m| {
        let m = m.to_lowercase();
        s == m || (s.len() >= 3 && m.starts_with(&s))
    });
    found.and_then(|i| u32::try_from(i + 1).ok())
}

impl DateInput {
    /// The boxes holding an ISO date (`2025-03-14` → 14, 3, 2025), as a form is first shown.
    pub fn from_iso(s: &str) -> DateInput {
        match NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d") {
            Ok(d) => DateInput { day: d.day().to_string(), month: d.month().to_string(), year: d.year().to_string() },
            Err(_) => DateInput::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        [&self.day, &self.month, &self.year].iter().all(|s| s.trim().is_empty())
    }

    /// The date typed, or what is wrong with it. `what` names the date in a sentence ("the date
    /// you started taking it") and starts the messages.
    pub fn parse(&self, what: &str) -> Result<NaiveDate, DateError> {
        let (d, m, y) = (self.day.trim(), self.month.trim(), self.year.trim());
        let what_cap = super::capitalised(what);
        let missing = match (d.is_empty(), m.is_empty(), y.is_empty()) {
            (true, true, true) => return Err(DateError::new(DatePart::All, format!("Enter {what}"))),
            (true, true, false) => Some((DatePart::DayMonth, "a day and month")),
            (true, false, true) => Some((DatePart::DayYear, "a day and year")),
            (false, true, true) => Some((DatePart::MonthYear, "a month and year")),
            (true, false, false) => Some((DatePart::Day, "a day")),
            (false, true, false) => Some((DatePart::Month, "a month")),
            (false, false, true) => Some((DatePart::Year, "a year")),
            (false, false, false) => None,
        };
        if let Some((part, words)) = missing {
            return Err(DateError::new(part, format!("{what_cap} must include {words}")));
        }
        let real = || DateError::new(DatePart::All, format!("{what_cap} must be a real date"));
        let day: u32 =
            d.parse().map_err(|_| DateError::new(DatePart::Day, format!("{what_cap} must be a real date")))?;
        let month = month_number(m)
            .ok_or_else(|| DateError::new(DatePart::Month, format!("{what_cap} must be a real date")))?;
        if y.len() != 4 || !y.chars().all(|c| c.is_ascii_digit()) {
            return Err(DateError::new(DatePart::Year, "Year must include 4 numbers".into()));
        }
        let year: i32 = y.parse().map_err(|_| real())?;
        NaiveDate::from_ymd_opt(year, month, day).ok_or_else(real)
    }

    /// An optional date as `YYYY-MM-DD`: empty when all three boxes are, else [`DateInput::parse`]'s.
    pub fn optional_iso(&self, what: &str) -> Result<String, DateError> {
        if self.is_empty() {
            return Ok(String::new());
        }
        self.parse(what).map(|d| d.format("%Y-%m-%d").to_string())
    }

    /// Like [`DateInput::parse`], for a date that cannot be later than `today` (as in England).
    pub fn parse_past(&self, what: &str, today: NaiveDate) -> Result<NaiveDate, DateError> {
        let d = self.parse(what)?;
        if d > today {
            let what = super::capitalised(what);
            return Err(DateError::new(DatePart::All, format!("{what} must be today or in the past")));
        }
        Ok(d)
    }
}

/// Today's date in England.
pub(crate) fn today_in_england() -> NaiveDate {
    london(Utc::now()).date()
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
        assert_eq!(date_part(&Value::from("2025-06-30T23:30:00Z")), "2025-07-01");
        assert_eq!(date_part(&Value::from("2025-01-30T23:30:00Z")), "2025-01-30");
        assert_eq!(date_part(&Value::from("2025-06")), "2025-06");
    }

    fn typed(d: &str, m: &str, y: &str) -> DateInput {
        DateInput { day: d.into(), month: m.into(), year: y.into() }
    }

    #[test]
    fn date_boxes_parse() {
        let when = "the date you started";
        assert_eq!(typed("15", "3", "2025").parse(when), Ok(NaiveDate::from_ymd_opt(2025, 3, 15).unwrap()));
        assert_eq!(typed(" 01 ", "Mar", "2025").parse(when), Ok(NaiveDate::from_ymd_opt(2025, 3, 1).unwrap()));
        assert_eq!(typed("1", "september", "2025").parse(when), Ok(NaiveDate::from_ymd_opt(2025, 9, 1).unwrap()));
        assert_eq!(DateInput::from_iso("2025-03-04"), typed("4", "3", "2025"));
        assert_eq!(DateInput::from_iso("nonsense"), DateInput::default());
        assert_eq!(typed(" ", "", "").optional_iso(when).as_deref(), Ok(""));
        assert_eq!(typed("4", "3", "2025").optional_iso(when).as_deref(), Ok("2025-03-04"));
        assert!(typed("4", "", "2025").optional_iso(when).is_err());
    }

    #[test]
    fn date_box_errors_say_which_box() {
        let when = "the date you started";
        let err = |i: DateInput| i.parse(when).unwrap_err();
        let e = err(typed("", "", ""));
        assert_eq!((e.part, e.message.as_str()), (DatePart::All, "Enter the date you started"));
        let e = err(typed("", "3", "2025"));
        assert_eq!((e.part, e.message.as_str()), (DatePart::Day, "The date you started must include a day"));
        assert!(e.day() && !e.month() && !e.year());
        assert_eq!(e.first_box(), "day");
        let e = err(typed("15", "", ""));
        assert_eq!(
            (e.part, e.message.as_str()),
            (DatePart::MonthYear, "The date you started must include a month and year")
        );
        assert_eq!(e.first_box(), "month");
        let e = err(typed("15", "13", "2025"));
        assert_eq!((e.part, e.message.as_str()), (DatePart::Month, "The date you started must be a real date"));
        let e = err(typed("31", "2", "2025"));
        assert_eq!((e.part, e.message.as_str()), (DatePart::All, "The date you started must be a real date"));
        let e = err(typed("1", "2", "25"));
        assert_eq!((e.part, e.message.as_str()), (DatePart::Year, "Year must include 4 numbers"));
        assert_eq!(err(typed("x", "2", "2025")).part, DatePart::Day);
        let today = NaiveDate::from_ymd_opt(2025, 3, 15).unwrap();
        assert!(typed("15", "3", "2025").parse_past(when, today).is_ok());
        let e = typed("16", "3", "2025").parse_past(when, today).unwrap_err();
        assert_eq!(e.message, "The date you started must be today or in the past");
    }

    #[test]
    fn typed_dates_are_checked() {
        assert!(parse_day("2025-03-14", "x").is_ok());
        assert!(parse_day("2025", "x").is_err());
        assert!(parse_day("yesterday", "x").is_err());
    }
}
