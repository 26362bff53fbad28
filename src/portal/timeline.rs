//! The medication timeline: a server-rendered SVG (no script, readable when printed) with a bar per
//! medicine from start to stop (or today), a mark at each dispensing, and a line for today. The
//! page pairs it with a table for screen readers.

use super::MedicineEntry;
use crate::time::parse_range;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const LABEL: f64 = 220.0;
const ROW: f64 = 28.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn day(s: &str) -> Option<i64> {
    parse_range(s).map(|r| r.lo / 86_400_000_000)
}

/// The SVG for `lines` up to `today` (YYYY-MM-DD); every text in it is escaped here.
pub fn svg(lines: &[MedicineEntry], today: &str) -> String {
    let now = day(today).unwrap_or(0);
    let spans: Vec<(&MedicineEntry, i64, i64)> = lines
        .iter()
        .filter_map(|m| {
            let start = day(&m.start)?;
            let end = if m.current { now } else { day(&m.stop).unwrap_or(start) };
            Some((m, start, end.max(start)))
        })
        .collect();
    let first = spans.iter().map(|s| s.1).min().unwrap_or(now - 365).min(now - 30);
    let x = |d: i64| LABEL + (d - first) as f64 / (now - first).max(1) as f64 * (WIDTH - LABEL - 10.0);
    let height = 40.0 + ROW * spans.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-labelledby=\"timeline-title\" class=\"timeline\">\
         <title id=\"timeline-title\">Your medicines over time, from {} to today</title>",
        escape(&super::long_date(&crate::time::format_instant(first * 86_400_000_000)[..10]))
    );
    for (i, (m, start, end)) in spans.iter().enumerate() {
        let y = 20.0 + ROW * i as f64;
        let colour = if m.current { "#005eb8" } else { "#768692" };
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\" fill=\"#212b32\">{}</text>",
            y + 14.0,
            escape(&m.name.chars().take(34).collect::<String>())
        );
        let _ = write!(out, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" rx=\"3\" fill=\"{colour}\"><title>{}: {} to {}</title></rect>", x(*start), y + 2.0, (x(*end) - x(*start)).max(3.0), escape(&m.name), escape(&super::long_date(&m.start)), if m.current { "now".to_string() } else { escape(&super::long_date(&m.stop)) });
        for when in &m.dispensed {
            if let Some(d) = day(when) {
                let _ = write!(out, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#ffeb3b\" stroke=\"#212b32\"><title>Dispensed {}</title></circle>", x(d), y + 10.0, escape(&super::long_date(when)));
            }
        }
    }
    let _ = write!(out, "<line x1=\"{0:.1}\" y1=\"10\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#d5281b\" stroke-width=\"2\"/><text x=\"{0:.1}\" y=\"{2:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#d5281b\">today</text></svg>", x(now), height - 8.0, height - 1.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, start: &str, stop: &str, current: bool) -> MedicineEntry {
        let line = crate::portal::MedicineLine {
            kind: "MedicationRequest",
            id: "1".into(),
            name: name.into(),
            dose: String::new(),
            status: String::new(),
            start: start.into(),
            stop: stop.into(),
            prescriber: None,
            organization: None,
            last_dispensed: Some("2025-06-01".into()),
            dispensed: vec!["2025-05-01".into(), "2025-06-01".into()],
            reported_by_you: false,
            unreviewed: false,
            current,
        };
        let source = crate::portal::grouping::Source { line, codes: vec![], links: vec![] };
        crate::portal::grouping::group(vec![source]).remove(0)
    }

    #[test]
    fn bars_marks_and_escaping() {
        let s =
            svg(&[line("A <b>&", "2024-01-01", "", true), line("B", "2023-01-01", "2023-06-01", false)], "2025-11-25");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(s.matches("<rect").count(), 2);
        assert_eq!(s.matches("<circle").count(), 4, "every dispensing is marked");
        assert!(s.contains("A &lt;b&gt;&amp;") && !s.contains("<b>"));
        assert!(s.contains(">today<"));
    }
}
