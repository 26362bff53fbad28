//! `healthfolio load`: Bundles, single resources and NDJSON, one transaction per file, so a bad
//! file leaves nothing behind.

use crate::access::AccessContext;
use crate::db::Conn;
use crate::federation::ingest::{ingest, AtItem, Feed};
use crate::fhir::store::{check_refs, create_in, create_many_in, existing, new_id, update_in, Refs};
use crate::fhir::{resource_type, FhirError};
use crate::Healthfolio;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

/// A progress bar on a terminal, plain progress lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    last_line: u64,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})") {
                b.set_style(style);
            }
            b.set_message(label.to_string());
            b
        });
        Progress { bar, label: label.to_string(), total, last_line: 0 }
    }

    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(b) => b.set_position(done),
            None => {
                // Ten lines over the whole run is enough for a log.
                let step = (self.total / 10).max(1);
                if done >= self.last_line + step || done == self.total {
                    eprintln!("{}: {done}/{}", self.label, self.total);
                    self.last_line = done;
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}, line {line}: {reason}")]
    Line { file: String, line: usize, reason: String },
    #[error("{file}: nothing was written: {source}")]
    Write { file: String, source: FhirError },
}

/// Load order: what others reference first, so references across files resolve.
const ORDER: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Medication",
    "Patient",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationStatement",
    "MedicationAdministration",
];

fn rank(path: &Path) -> usize {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    ORDER.iter().position(|t| *t == stem).unwrap_or(ORDER.len())
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p)
                .map_err(|e| LoadError::Read { file: p.display().to_string(), reason: e.to_string() })?;
            let mut inner: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| matches!(f.extension().and_then(|x| x.to_str()), Some("json" | "ndjson")))
                .collect();
            inner.sort();
            out.extend(inner);
        } else {
            out.push(p.clone());
        }
    }
    out.sort_by_key(|p| rank(p));
    Ok(out)
}

/// The resources of one file, each with its line number (1 for a JSON file).
fn parse_file(path: &Path) -> Result<Vec<(usize, Value)>, LoadError> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| LoadError::Read { file: file.clone(), reason: e.to_string() })?;
    if path.extension().and_then(|x| x.to_str()) == Some("ndjson") {
        let mut out = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| LoadError::Line { file: file.clone(), line: i + 1, reason: e.to_string() })?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| LoadError::Line {
                file: file.clone(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            out.push((i + 1, v));
        }
        return Ok(out);
    }
    let v: Value = serde_json::from_reader(std::io::BufReader::new(f)).map_err(|e| LoadError::Line {
        file: file.clone(),
        line: e.line(),
        reason: e.to_string(),
    })?;
    Ok(vec![(1, v)])
}

/// Loads files; with `feed`, as a bulk extract from that federated source (see
/// [`crate::federation::ingest`]): copies owned by the source, idempotent, all or nothing per file.
pub fn load_paths(hf: &Healthfolio, paths: &[PathBuf], feed: Option<&Feed>) -> Result<String, LoadError> {
    let ctx = AccessContext::operator("load");
    let (mut total, mut nfiles) = (0usize, 0usize);
    let started = std::time::Instant::now();
    for path in files(paths)? {
        let items = parse_file(&path)?;
        let file = path.display().to_string();
        let mut bar = Progress::new(&file, items.len() as u64);
        let n = match feed {
            Some(f) => load_feed(hf, f, &file, items)?,
            None => load_items(hf, &ctx, &file, items, &mut bar)?,
        };
        bar.finish();
        total += n;
        nfiles += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "loaded {total} resource(s) from {nfiles} file(s) in {secs:.1} s ({:.0} resources/s)",
        total as f64 / secs.max(0.001)
    ))
}

/// A failure at a line of the file being loaded (line 0: the file as a whole).
struct AtLine(usize, FhirError);

impl From<crate::db::DbError> for AtLine {
    fn from(e: crate::db::DbError) -> Self {
        AtLine(0, e.into())
    }
}

fn load_items(
    hf: &Healthfolio,
    ctx: &AccessContext,
    file: &str,
    items: Vec<(usize, Value)>,
    bar: &mut Progress,
) -> Result<usize, LoadError> {
    // Bundles go through the bundle processor (transaction semantics, urn:uuid references).
    if let [(_, v)] = items.as_slice() {
        if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            return load_bundle(hf, ctx, file, v.clone());
        }
    }
    let n = items.len();
    hf.db
        .transaction(|conn| {
            let mut refs = Refs::default();
            let mut done = 0;
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<(usize, Value)> = items.by_ref().take(LOAD_CHUNK).collect();
                done += chunk.len() as u64;
                load_chunk(conn, ctx, &mut refs, chunk)?;
                bar.set(done);
            }
            check_refs(conn, &refs).map_err(|e| AtLine(0, e))?;
            Ok(n)
        })
        .map_err(|AtLine(line, e)| match line {
            0 => LoadError::Write { file: file.to_string(), source: e },
            line => LoadError::Line {
                file: file.to_string(),
                line,
                reason: format!("{e}; nothing from this file was written"),
            },
        })
}

const LOAD_CHUNK: usize = 1000;

/// Writes one chunk of a file: the resources new here together (a few multi-row statements), the
/// rest one by one, in file order for any id that appears twice. Patients (one per NHS number)
/// and Provenance (whose record is found through its target) always go one by one.
fn load_chunk(conn: &mut Conn, ctx: &AccessContext, refs: &mut Refs, chunk: Vec<(usize, Value)>) -> Result<(), AtLine> {
    let mut typed = Vec::with_capacity(chunk.len());
    for (line, body) in chunk {
        let t = body
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(resource_type)
            .ok_or_else(|| AtLine(line, FhirError::invalid("no resourceType this server holds")))?;
        typed.push((line, t, body));
    }
    let keys: Vec<(&str, &str)> =
        typed.iter().filter_map(|(_, t, b)| b.get("id").and_then(Value::as_str).map(|id| (*t, id))).collect();
    let held = existing(conn, &keys).map_err(|e| AtLine(0, e))?;
    let mut first_seen = HashSet::new();
    let (mut together, mut lines, mut one_by_one) = (Vec::new(), Vec::new(), Vec::new());
    for (line, t, body) in typed {
        let id = body.get("id").and_then(Value::as_str).map(str::to_string);
        match id {
            Some(id)
                if !matches!(t, "Patient" | "Provenance")
                    && !held.contains(&(t.to_string(), id.clone()))
                    && first_seen.insert((t, id.clone())) =>
            {
                together.push((t, body, id));
                lines.push(line);
            }
            id => one_by_one.push((line, t, body, id)),
        }
    }
    create_many_in(conn, ctx, refs, together, "PUT").map_err(|(i, e)| AtLine(i.map_or(0, |i| lines[i]), e))?;
    for (line, t, body, id) in one_by_one {
        match id {
            Some(id) => update_in(conn, ctx, refs, t, &id, body, None).map(|_| ()),
            None => create_in(conn, ctx, refs, t, body, new_id(), "POST").map(|_| ()),
        }
        .map_err(|e| AtLine(line, e))?;
    }
    Ok(())
}

fn load_feed(hf: &Healthfolio, feed: &Feed, file: &str, items: Vec<(usize, Value)>) -> Result<usize, LoadError> {
    // A Bundle's entries are the feed's items, numbered by entry.
    let items = match items.as_slice() {
        [(_, v)] if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") => v["entry"]
            .as_array()
            .map(|es| es.iter().enumerate().filter_map(|(i, e)| Some((i + 1, e.get("resource")?.clone()))).collect())
            .unwrap_or_default(),
        _ => items,
    };
    hf.db.transaction(|conn| ingest(conn, feed, items)).map(|w| w.len()).map_err(|AtItem(line, e)| match line {
        0 => LoadError::Write { file: file.to_string(), source: e },
        line => {
            LoadError::Line { file: file.to_string(), line, reason: format!("{e}; nothing from this file was written") }
        }
    })
}

fn load_bundle(hf: &Healthfolio, ctx: &AccessContext, file: &str, mut v: Value) -> Result<usize, LoadError> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    if !matches!(kind.as_str(), "transaction" | "batch") {
        // A collection (or other) Bundle is loaded as a transaction of updates by id, or creates.
        let entries = v.get_mut("entry").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
        let tx: Vec<Value> = entries
            .into_iter()
            .filter_map(|e| e.get("resource").cloned().map(|r| (e.get("fullUrl").cloned(), r)))
            .map(|(full, r)| {
                let t = r["resourceType"].as_str().unwrap_or_default().to_string();
                let req = match r.get("id").and_then(Value::as_str) {
                    Some(id) => serde_json::json!({"method": "PUT", "url": format!("{t}/{id}")}),
                    None => serde_json::json!({"method": "POST", "url": t}),
                };
                let mut e = serde_json::json!({"resource": r, "request": req});
                if let Some(f) = full {
                    e["fullUrl"] = f;
                }
                e
            })
            .collect();
        v = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": tx});
    }
    let out =
        hf.store.process_bundle(ctx, v, false).map_err(|e| LoadError::Write { file: file.to_string(), source: e })?;
    Ok(out["entry"].as_array().map_or(0, Vec::len))
}
