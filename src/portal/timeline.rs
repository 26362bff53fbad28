//! The medication timeline: a server-rendered SVG (no script, readable when printed) with a bar per
//! medicine from start to stop (or today), a mark at each dispensing, a line for today and a date
//! axis. The page pairs it with a legend built from what is drawn and a table for screen readers.
//!
//! Two layouts of the same picture: a wide one (names in a column beside the bars) and a narrow
//! one for phones (each name above its bar, across the whole width), so that text stays at least
//! 12 px where it is shown; the page's CSS shows one of them. Names wrap onto more lines rather
//! than being cut, and a bar is never thinner than [`MIN_BAR`], so a course of a few days shows.

use super::MedicineEntry;
use chrono::{Datelike, NaiveDate};
use std::fmt::Write;

/// The thinnest bar drawn (viewBox units, about pixels): a 3-day course in a 10-year picture
/// would otherwise be a hairline.
pub const MIN_BAR: f64 = 6.0;

const CURRENT: &str = "#005eb8";
const PAST: &str = "#768692";
const DISPENSED: &str = "#ffeb3b";
const TODAY: &str = "#d5281b";
const TEXT: &str = "#212b32";

/// The geometry of one layout.
struct Layout {
    /// `wide` or `narrow`: the CSS class and the ids.
    name: &'static str,
    width: f64,
    /// The names' column; 0 puts each name above its bar.
    label: f64,
    font: f64,
    /// Characters on a line of a name before it wraps.
    chars: usize,
}

const WIDE: Layout = Layout { name: "wide", width: 720.0, label: 240.0, font: 15.0, chars: 26 };
const NARROW: Layout = Layout { name: "narrow", width: 320.0, label: 0.0, font: 14.0, chars: 36 };

/// The timeline of a page: both layouts and the legend's keys (class, words), in drawing order,
/// only for what is drawn.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub wide: String,
    pub narrow: String,
    pub legend: Vec<(&'static str, &'static str)>,
}

/// A mark on the date axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub day: NaiveDate,
    pub label: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// A medicine's name on lines of at most `chars` characters, broken between words (a word longer
/// than a line is split): every character is kept.
pub fn wrap(name: &str, chars: usize) -> Vec<String> {
    let chars = chars.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in name.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > chars {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..chars).collect());
        }
        let word: String = word.into_iter().collect();
        if word.is_empty() {
            continue;
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > chars {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The axis marks between `first` and `last`, at least `gap` days apart: years (labelled 2024),
/// or over two years or less months (labelled Mar, with the year at January and at the first
/// mark) when they fit.
pub fn ticks(first: NaiveDate, last: NaiveDate, gap: f64) -> Vec<Tick> {
    let months_between = |m: i32| m as f64 * 30.44;
    let short = (last - first).num_days() <= 731;
    let month_step = [1, 2, 3, 6].into_iter().find(|&m| short && months_between(m) >= gap);
    let mut out = Vec::new();
    match month_step {
        Some(step) => {
            let (mut y, mut m) = (first.year(), first.month0() as i32 + 1);
            loop {
                if m >= 12 {
                    y += m / 12;
                    m %= 12;
                }
                let Some(d) = NaiveDate::from_ymd_opt(y, m as u32 + 1, 1) else { break };
                if d > last {
                    break;
                }
                if m % step == 0 {
                    let label = if m == 0 || out.is_empty() {
                        if m == 0 {
                            y.to_string()
                        } else {
                            format!("{} {y}", MONTHS[m as usize])
                        }
                    } else {
                        MONTHS[m as usize].to_string()
                    };
                    out.push(Tick { day: d, label });
                }
                m += 1;
            }
        }
        None => {
            let step = [1, 2, 5, 10, 20, 50].into_iter().find(|&y| months_between(12 * y) >= gap).unwrap_or(100);
            // The first year at the axis' start too, when there is room before the next mark:
            // a bar that starts before the first January is then not without a year.
            let next = NaiveDate::from_ymd_opt(first.year() + 1, 1, 1);
            if step == 1 && next.is_some_and(|n| (n - first).num_days() as f64 >= gap) {
                out.push(Tick { day: first, label: first.year().to_string() });
            }
            for y in first.year() + 1..=last.year() {
                if y % step == 0 {
                    if let Some(d) = NaiveDate::from_ymd_opt(y, 1, 1) {
                        out.push(Tick { day: d, label: y.to_string() });
                    }
                }
            }
        }
    }
    out
}

/// A bar's x and width, never thinner than [`MIN_BAR`] and kept inside the plot.
pub fn bar(x0: f64, x1: f64, right: f64) -> (f64, f64) {
    let width = (x1 - x0).max(MIN_BAR);
    let x = if x0 + width > right { (right - width).max(0.0) } else { x0 };
    (x, width)
}

struct Span<'a> {
    m: &'a MedicineEntry,
    start: NaiveDate,
    end: NaiveDate,
    dispensed: Vec<NaiveDate>,
}

fn spans<'a>(lines: &'a [MedicineEntry], today: NaiveDate) -> Vec<Span<'a>> {
    lines
        .iter()
        .filter_map(|m| {
            let start = day(&m.start)?;
            let end = if m.current { today } else { day(&m.stop).unwrap_or(start) };
            let dispensed = m.dispensed.iter().filter_map(|d| day(d)).collect();
            Some(Span { m, start, end: end.max(start), dispensed })
        })
        .collect()
}

/// The timeline for `lines` up to `today` (YYYY-MM-DD, in England); every text in it is escaped here.
pub fn timeline(lines: &[MedicineEntry], today: &str) -> Timeline {
    let now = day(today).unwrap_or_default();
    let spans = spans(lines, now);
    let mut legend = Vec::new();
    if spans.iter().any(|s| s.m.current) {
        legend.push(("current", "A medicine you take now"));
    }
    if spans.iter().any(|s| !s.m.current) {
        legend.push(("past", "A medicine you took in the past"));
    }
    if spans.iter().any(|s| !s.dispensed.is_empty()) {
        legend.push(("dispensed", "A pharmacy gave it to you"));
    }
    legend.push(("today", "Today"));
    Timeline { wide: draw(&WIDE, &spans, now), narrow: draw(&NARROW, &spans, now), legend }
}

const AXIS: f64 = 34.0;

fn draw(l: &Layout, spans: &[Span], now: NaiveDate) -> String {
    let earliest = spans.iter().flat_map(|s| std::iter::once(s.start).chain(s.dispensed.iter().copied())).min();
    // At least a month, and a little room before the first start.
    let first = earliest.unwrap_or(now).min(now - chrono::Days::new(30));
    let span_days = (now - first).num_days().max(1) as f64;
    let first = first - chrono::Days::new((span_days / 40.0).ceil() as u64);
    let (left, right) = (l.label + 4.0, l.width - 12.0);
    let total = (now - first).num_days().max(1) as f64;
    let x = |d: NaiveDate| left + (d - first).num_days() as f64 / total * (right - left);
    let line = l.font * 1.25;
    let rows: Vec<(Vec<String>, f64)> = spans
        .iter()
        .map(|s| {
            let names = wrap(&s.m.name, l.chars);
            let h = if l.label > 0.0 {
                (line * names.len() as f64 + 10.0).max(30.0)
            } else {
                line * names.len() as f64 + 28.0
            };
            (names, h)
        })
        .collect();
    let height = AXIS + rows.iter().map(|r| r.1).sum::<f64>() + 8.0;
    let id = format!("timeline-{}", l.name);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {height:.0}\" role=\"img\" aria-labelledby=\"{id}-title\" class=\"timeline {}\" font-family=\"inherit\" font-size=\"{}\">\
         <title id=\"{id}-title\">Your medicines over time, from {} to today</title>",
        l.width,
        l.name,
        l.font,
        escape(&super::long_date(&first.to_string())),
    );
    // The axis: a mark and a label for each tick, labels at least ~4 characters apart.
    let gap_px = l.font * 4.0;
    let gap_days = gap_px / (right - left) * total;
    let _ = write!(out, "<g class=\"axis\" fill=\"{TEXT}\" stroke=\"#aeb7bd\">");
    let _ = write!(out, "<line x1=\"{left:.1}\" y1=\"{0:.1}\" x2=\"{right:.1}\" y2=\"{0:.1}\"/>", AXIS - 6.0);
    for t in ticks(first, now, gap_days) {
        let tx = x(t.day);
        let _ = write!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{height:.1}\" stroke-dasharray=\"2 3\"/><text x=\"{tx:.1}\" y=\"{:.1}\" stroke=\"none\" text-anchor=\"{}\">{}</text>",
            AXIS - 10.0,
            AXIS - 14.0,
            if tx + gap_px > l.width { "end" } else { "start" },
            escape(&t.label)
        );
    }
    out.push_str("</g>");
    let mut y = AXIS;
    for (s, (names, h)) in spans.iter().zip(&rows) {
        let colour = if s.m.current { CURRENT } else { PAST };
        let (name_x, first_line, bar_y) = if l.label > 0.0 {
            let bar_y = y + (h - 16.0) / 2.0;
            (0.0, y + (h - line * names.len() as f64) / 2.0 + l.font, bar_y)
        } else {
            (0.0, y + l.font + 2.0, y + line * names.len() as f64 + 6.0)
        };
        let _ = write!(out, "<text x=\"{name_x}\" y=\"{first_line:.1}\" fill=\"{TEXT}\">");
        for (i, n) in names.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { line };
            let _ = write!(out, "<tspan x=\"{name_x}\" dy=\"{dy:.1}\">{}</tspan>", escape(n));
        }
        out.push_str("</text>");
        let (bx, bw) = bar(x(s.start), x(s.end), right);
        let until = if s.m.current { "now".to_string() } else { super::long_date(&s.end.to_string()) };
        let _ = write!(
            out,
            "<rect x=\"{bx:.1}\" y=\"{bar_y:.1}\" width=\"{bw:.1}\" height=\"16\" rx=\"3\" fill=\"{colour}\"><title>{}: {} to {}</title></rect>",
            escape(&s.m.name),
            escape(&super::long_date(&s.start.to_string())),
            escape(&until)
        );
        for d in &s.dispensed {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{DISPENSED}\" stroke=\"{TEXT}\"><title>Dispensed {}</title></circle>",
                x(*d).clamp(left, right),
                bar_y + 8.0,
                escape(&super::long_date(&d.to_string()))
            );
        }
        y += h;
    }
    let tx = x(now);
    let _ = write!(
        out,
        "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{height:.1}\" stroke=\"{TODAY}\" stroke-width=\"2\"/></svg>",
        AXIS - 6.0
    );
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

    fn d(s: &str) -> NaiveDate {
        day(s).unwrap_or_default()
    }

    /// The numbers in `attr="…"` of every `<tag` in `svg`.
    fn attrs(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|t| t.split(&format!(" {attr}=\"")).nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn bars_marks_and_escaping() {
        let t = timeline(
            &[line("A <b>&", "2024-01-01", "", true), line("B", "2023-01-01", "2023-06-01", false)],
            "2025-11-25",
        );
        for s in [&t.wide, &t.narrow] {
            assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
            assert_eq!(s.matches("<rect").count(), 2);
            assert_eq!(s.matches("<circle").count(), 4, "every dispensing is marked");
            assert!(s.contains("A &lt;b&gt;&amp;") && !s.contains("<b>"));
            assert!(s.contains("<title>Dispensed 1 May 2025</title>"), "dates in words");
        }
        assert_ne!(t.wide, t.narrow);
        assert!(t.wide.contains("id=\"timeline-wide-title\"") && t.narrow.contains("id=\"timeline-narrow-title\""));
    }

    #[test]
    fn the_legend_is_what_is_drawn() {
        let keys = |t: Timeline| t.legend.iter().map(|k| k.0).collect::<Vec<_>>();
        let both = [line("A", "2024-01-01", "", true), line("B", "2023-01-01", "2023-06-01", false)];
        assert_eq!(keys(timeline(&both, "2025-11-25")), ["current", "past", "dispensed", "today"]);
        let mut past = line("B", "2023-01-01", "2023-06-01", false);
        past.dispensed.clear();
        assert_eq!(keys(timeline(&[past], "2025-11-25")), ["past", "today"]);
    }

    #[test]
    fn years_on_a_long_axis_months_on_a_short_one() {
        let years = ticks(d("2019-05-01"), d("2025-11-25"), 100.0);
        let labels: Vec<&str> = years.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["2019", "2020", "2021", "2022", "2023", "2024", "2025"]);
        assert_eq!((years[0].day, years[1].day), (d("2019-05-01"), d("2020-01-01")), "the first year at the start");
        // No room before the first January: no label at the start.
        assert_eq!(ticks(d("2019-11-01"), d("2025-11-25"), 100.0)[0].label, "2020");
        // Crowded: every other year.
        let sparse = ticks(d("2005-05-01"), d("2025-11-25"), 500.0);
        assert!(sparse.iter().all(|t| t.day.year() % 2 == 0) && sparse.len() == 10, "{sparse:?}");
        // Short: months, the year at January and on the first mark.
        let months = ticks(d("2025-03-10"), d("2025-11-25"), 20.0);
        let labels: Vec<&str> = months.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["Apr 2025", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"]);
        let across = ticks(d("2024-10-10"), d("2025-04-25"), 40.0);
        let labels: Vec<&str> = across.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["Nov 2024", "2025", "Mar"]);
    }

    #[test]
    fn the_drawn_axis_has_year_labels() {
        let t = timeline(&[line("A", "2019-03-01", "", true)], "2025-11-25");
        for s in [&t.wide, &t.narrow] {
            let years = (2019..=2025).filter(|y| s.contains(&format!(">{y}</text>"))).count();
            assert!(years >= 3, "years on the axis: {s}");
        }
        assert!((2020..=2025).all(|y| t.wide.contains(&format!(">{y}</text>"))), "every year fits: {}", t.wide);
    }

    #[test]
    fn a_short_course_is_visible() {
        let t = timeline(
            &[line("Amoxicillin", "2025-03-01", "2025-03-04", false), line("Old", "2015-01-01", "", true)],
            "2025-11-25",
        );
        for s in [&t.wide, &t.narrow] {
            let widths = attrs(s, "rect", "width");
            assert_eq!(widths.len(), 2);
            assert!(widths.iter().all(|w| *w >= MIN_BAR), "{widths:?}");
        }
        assert_eq!(bar(100.0, 100.5, 700.0), (100.0, MIN_BAR));
        assert_eq!(bar(698.0, 698.0, 700.0), (700.0 - MIN_BAR, MIN_BAR), "kept inside the plot");
    }

    #[test]
    fn names_wrap_and_are_never_cut() {
        let name = "Co-amoxiclav 500mg/125mg tablets (Sandoz Ltd) with an extraordinarily long description";
        let lines = wrap(name, 26);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.chars().count() <= 26), "{lines:?}");
        assert_eq!(lines.join(" "), name, "every word kept, in order");
        assert_eq!(wrap("Supercalifragilistic", 8), ["Supercal", "ifragili", "stic"]);
        assert_eq!(wrap("", 8), [""]);
        let t = timeline(&[line(name, "2024-01-01", "", true)], "2025-11-25");
        for (s, chars) in [(&t.wide, WIDE.chars), (&t.narrow, NARROW.chars)] {
            let tspans: Vec<&str> =
                s.split("<tspan").skip(1).filter_map(|t| t.split('>').nth(1)?.split('<').next()).collect();
            assert_eq!(tspans.join(" "), name, "the whole name is drawn");
            assert!(tspans.iter().all(|t| t.chars().count() <= chars));
        }
    }

    #[test]
    fn rows_do_not_overlap() {
        let long = "A very long medicine name that needs three lines or more to fit in the column";
        let t = timeline(&[line(long, "2024-01-01", "", true), line("B", "2023-01-01", "", true)], "2025-11-25");
        for (s, l) in [(&t.wide, WIDE), (&t.narrow, NARROW)] {
            let bars = attrs(s, "rect", "y");
            let names: Vec<f64> =
                s.split("<text x=\"0\" y=\"").skip(1).filter_map(|t| t.split('"').next()?.parse().ok()).collect();
            let lines = wrap(long, l.chars).len() as f64;
            assert!(lines >= 3.0);
            let next_top = names[1] - l.font;
            assert!(next_top > bars[0] + 16.0, "{}: the second name is below the first bar", l.name);
            assert!(next_top > names[0] + (lines - 1.0) * l.font * 1.25, "{}: and below the first name", l.name);
        }
    }
}
