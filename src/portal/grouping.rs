//! One entry per medicine. To the patient a prescription, its dispensings and their own "I take
//! it" are one medicine, not three cards: records of the same medicine (the same dm+d / SNOMED CT
//! code, or with no code the same name) and records that point at each other (a statement
//! `basedOn` or `derivedFrom` a prescription) are shown as one entry naming all its sources.

use super::medicines::MedicineLine;
use super::{capitalised, long_date};
use crate::fhir::safety::name_key;
use std::collections::HashMap;

/// One prescription or statement with what grouping needs to know of it.
pub(crate) struct Source {
    pub line: MedicineLine,
    /// dm+d / SNOMED CT codes (one code space).
    pub codes: Vec<String>,
    /// `Type/id` of the records it is based on or derived from.
    pub links: Vec<String>,
}

/// A medicine with every record that speaks of it.
#[derive(Debug, Clone)]
pub struct MedicineEntry {
    pub name: String,
    pub dose: String,
    pub status: String,
    /// The earliest start of any source.
    pub start: String,
    /// The latest stop, empty while the medicine is current.
    pub stop: String,
    /// Current when any of its sources is.
    pub current: bool,
    /// Every hand-over date of its prescriptions, oldest first.
    pub dispensed: Vec<String>,
    pub last_dispensed: Option<String>,
    /// Never empty: current first, prescriptions before statements, newest first. The first
    /// gives the entry its name, dose and status.
    pub sources: Vec<MedicineLine>,
}

/// One source in plain words, with its detail page: `words`, then the date (`when`, in words,
/// which a page keeps on one line), then `after`.
#[derive(Debug, Clone, Default)]
pub struct Said {
    pub words: String,
    pub when: Option<String>,
    pub after: String,
    pub link: Option<String>,
}

impl Said {
    /// As one line of text: "Prescribed by Dr Helen Carter, 3 March 2025 (now finished)".
    pub fn text(&self) -> String {
        match &self.when {
            Some(w) => format!("{}{w}{}", self.words, self.after),
            None => format!("{}{}", self.words, self.after),
        }
    }
}

impl MedicineEntry {
    /// The status in words ("Current", "Stopped").
    pub fn status_words(&self) -> &'static str {
        super::words::medicine_status(&self.status)
    }

    /// The detail page of the source that names the entry.
    pub fn link(&self) -> String {
        let main = &self.sources[0];
        format!("/portal/medicines/{}/{}", main.kind_slug(), main.id)
    }

    /// The sources as the patient reads them ("You said you take it").
    pub fn said(&self) -> Vec<Said> {
        self.words()
    }

    /// The sources as someone else reads them, on paper ("The patient said they take it").
    pub fn said_printed(&self) -> Vec<Said> {
        self.sources.iter().map(|s| source_words(s, false)).collect()
    }

    /// The patient's own current statement, which they may say they stopped.
    pub fn stoppable(&self) -> Option<&MedicineLine> {
        self.sources.iter().find(|s| s.reported_by_you && s.current)
    }

    fn words(&self) -> Vec<Said> {
        let mut out = Vec::new();
        let mut dispensing = self.last_dispensed.as_deref().map(|d| Said {
            words: "Last dispensed ".into(),
            when: Some(long_date(d)),
            ..Said::default()
        });
        for (i, s) in self.sources.iter().enumerate() {
            let link = Some(format!("/portal/medicines/{}/{}", s.kind_slug(), s.id));
            out.push(Said { link, ..source_words(s, true) });
            // Once, after the last of the prescriptions the dispensings were for.
            if s.kind == "MedicationRequest" && !self.sources[i + 1..].iter().any(|n| n.kind == s.kind) {
                out.extend(dispensing.take());
            }
        }
        out
    }
}

/// "Prescribed by Dr Helen Carter (Riverside Medical Practice), 3 March 2025".
fn source_words(s: &MedicineLine, to_patient: bool) -> Said {
    let when = (!s.start.is_empty()).then(|| long_date(&s.start));
    let said = |words: String, after: String| match &when {
        Some(_) => Said { words: format!("{words}, "), when: when.clone(), after, link: None },
        None => Said { words, when: None, after, link: None },
    };
    let ended = if s.current { String::new() } else { format!(" (now {})", s.status_words().to_lowercase()) };
    if s.kind == "MedicationRequest" {
        let by = match (&s.prescriber, &s.organization) {
            (Some(who), Some(org)) => format!(" by {who} ({org})"),
            (Some(who), None) | (None, Some(who)) => format!(" by {who}"),
            (None, None) => String::new(),
        };
        return said(format!("Prescribed{by}"), ended);
    }
    if !s.reported_by_you {
        let by = s.organization.as_ref().map(|o| format!(" by {o}")).unwrap_or_default();
        return said(format!("Recorded as taken{by}"), ended);
    }
    let said = if to_patient { "you said you" } else { "the patient said they" };
    let what = match (s.current, s.status.as_str()) {
        (true, _) => format!("{said} take it"),
        (false, "stopped") => format!("{said} stopped taking it"),
        (false, _) => format!("{said} took it"),
    };
    let review = if s.unreviewed { " \u{2013} not yet reviewed by a clinician" } else { "" };
    Said { words: capitalised(&format!("{what}{review}")), ..Said::default() }
}

/// Union-find over source indexes.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn join(parent: &mut [usize], a: usize, b: usize) {
    let (a, b) = (root(parent, a), root(parent, b));
    parent[a] = b;
}

/// Which sources are one medicine, as a parent forest (linear in the number of sources: a long
/// record holds thousands).
fn medicines_of(sources: &[Source]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..sources.len()).collect();
    let mut by_code: HashMap<&str, usize> = HashMap::new();
    let mut by_uncoded_name: HashMap<String, usize> = HashMap::new();
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        by_ref.insert(format!("{}/{}", s.line.kind, s.line.id), i);
        for c in &s.codes {
            let first = *by_code.entry(c).or_insert(i);
            join(&mut parent, i, first);
        }
        if s.codes.is_empty() {
            let first = *by_uncoded_name.entry(name_key(&s.line.name)).or_insert(i);
            join(&mut parent, i, first);
        }
    }
    for (i, s) in sources.iter().enumerate() {
        // A medicine the patient named in words is the coded one of that name.
        if let Some(&j) = by_uncoded_name.get(&name_key(&s.line.name)) {
            join(&mut parent, i, j);
        }
        for l in &s.links {
            if let Some(&j) = by_ref.get(l) {
                join(&mut parent, i, j);
            }
        }
    }
    (0..sources.len()).map(|i| root(&mut parent, i)).collect()
}

/// The medicines among `sources`, current first, newest first within each.
pub(crate) fn group(sources: Vec<Source>) -> Vec<MedicineEntry> {
    let roots = medicines_of(&sources);
    let mut groups: Vec<Vec<MedicineLine>> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (s, r) in sources.into_iter().zip(roots) {
        let at = *slot.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(s.line);
    }
    let mut out: Vec<MedicineEntry> = groups.into_iter().filter_map(entry).collect();
    out.sort_by(|a, b| b.current.cmp(&a.current).then(b.start.cmp(&a.start)).then(a.name.cmp(&b.name)));
    out
}

fn entry(mut sources: Vec<MedicineLine>) -> Option<MedicineEntry> {
    sources.sort_by(|a, b| {
        b.current
            .cmp(&a.current)
            .then((a.kind != "MedicationRequest").cmp(&(b.kind != "MedicationRequest")))
            .then(b.start.cmp(&a.start))
    });
    let main = sources.first()?.clone();
    let current = main.current;
    let start = sources.iter().map(|s| &s.start).filter(|s| !s.is_empty()).min().cloned().unwrap_or_default();
    let stop = if current { String::new() } else { sources.iter().map(|s| s.stop.clone()).max().unwrap_or_default() };
    let mut dispensed: Vec<String> = sources.iter().flat_map(|s| s.dispensed.iter().cloned()).collect();
    dispensed.sort();
    dispensed.dedup();
    Some(MedicineEntry {
        name: main.name,
        dose: main.dose,
        status: main.status,
        start,
        stop,
        current,
        last_dispensed: dispensed.last().cloned(),
        dispensed,
        sources,
    })
}
