//! Turns a resource into search index rows, one walk per parameter path.

use super::params::{params_for, Kind, Param};
use super::time::{parse_range, Range, OPEN_HI, OPEN_LO};
use serde_json::Value;

#[derive(Debug, Default)]
pub struct IndexRows {
    pub tokens: Vec<(&'static str, Option<String>, String)>,
    pub strings: Vec<(&'static str, String, String)>,
    pub dates: Vec<(&'static str, Range)>,
    pub refs: Vec<(&'static str, String, String)>,
}

/// Every index row of `body` (a resource of `rtype`).
pub fn extract(rtype: &str, body: &Value) -> IndexRows {
    let mut rows = IndexRows::default();
    for param in params_for(rtype) {
        for path in param.paths {
            let mut nodes = Vec::new();
            collect(body, path, &mut nodes);
            for node in nodes {
                add(param, node, &mut rows);
            }
        }
    }
    rows
}

/// The nodes at a dotted path, flattening arrays on the way.
pub fn collect<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let Some(next) = v.get(head) else { return };
    let items: Vec<&Value> = match next {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for item in items {
        match rest {
            Some(r) => collect(item, r, out),
            None => out.push(item),
        }
    }
}

fn add(param: &'static Param, node: &Value, rows: &mut IndexRows) {
    match param.kind {
        Kind::Token => tokens(node, &mut |system, code| rows.tokens.push((param.name, system, code))),
        Kind::String => strings(node, &mut |raw| rows.strings.push((param.name, normalize(raw), raw.to_string()))),
        Kind::Date => {
            if let Some(r) = date_range(node) {
                rows.dates.push((param.name, r));
            }
        }
        Kind::Reference => {
            if let Some((t, id)) = node.get("reference").and_then(Value::as_str).and_then(super::reference::local) {
                if param.target.is_none_or(|want| want == t) {
                    rows.refs.push((param.name, t.to_string(), id.to_string()));
                }
            }
        }
    }
}

fn tokens(node: &Value, emit: &mut dyn FnMut(Option<String>, String)) {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match node {
        Value::String(s) => emit(None, s.clone()),
        Value::Bool(b) => emit(None, b.to_string()),
        Value::Object(_) => {
            if let Some(codings) = node.get("coding").and_then(Value::as_array) {
                for c in codings {
                    if let Some(code) = text(c, "code") {
                        emit(text(c, "system").map(|s| normalize_system(&s)), code);
                    }
                }
            } else if let Some(value) = text(node, "value") {
                // Identifier, or ContactPoint (telecom) whose "system" is a kind, not a URI.
                emit(text(node, "system"), value);
            } else if let Some(code) = text(node, "code") {
                emit(text(node, "system").map(|s| normalize_system(&s)), code);
            }
        }
        _ => {}
    }
}

fn strings(node: &Value, emit: &mut dyn FnMut(&str)) {
    match node {
        Value::String(s) => emit(s),
        Value::Object(o) => {
            for key in ["text", "family", "given", "prefix", "line", "city", "postalCode"] {
                match o.get(key) {
                    Some(Value::String(s)) => emit(s),
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(&mut *emit),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn date_range(node: &Value) -> Option<Range> {
    match node {
        Value::String(s) => parse_range(s),
        Value::Object(o) => {
            let start = o.get("start").and_then(Value::as_str).and_then(parse_range);
            let end = o.get("end").and_then(Value::as_str).and_then(parse_range);
            if start.is_none() && end.is_none() {
                return None;
            }
            Some(Range { lo: start.map_or(OPEN_LO, |r| r.lo), hi: end.map_or(OPEN_HI, |r| r.hi) })
        }
        _ => None,
    }
}

/// The dm+d system is written with and without a trailing slash (conformance §8.3).
pub fn normalize_system(s: &str) -> String {
    s.strip_suffix('/').filter(|b| *b == super::DMD_SYSTEM).unwrap_or(s).to_string()
}

/// String search is case- and accent-insensitive: fold both sides the same way.
pub fn normalize(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).map(fold_accent).collect()
}

fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ý' | 'ÿ' => 'y',
        'š' => 's',
        'ž' => 'z',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medication_request_rows() {
        let mr = json!({"resourceType":"MedicationRequest","status":"active","intent":"order",
            "subject":{"reference":"Patient/p1"},
            "medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk/","code":"322236009"}]},
            "authoredOn":"2025-01-02"});
        let rows = extract("MedicationRequest", &mr);
        assert!(rows.refs.contains(&("patient", "Patient".into(), "p1".into())));
        assert!(rows.refs.contains(&("subject", "Patient".into(), "p1".into())));
        assert!(rows.tokens.contains(&("code", Some("https://dmd.nhs.uk".into()), "322236009".into())));
        assert!(rows.tokens.contains(&("status", None, "active".into())));
        assert_eq!(rows.dates.len(), 1);
    }

    #[test]
    fn names_fold_case_and_accents() {
        let p = json!({"name":[{"family":"Brontë","given":["Émily","Jane"]}]});
        let rows = extract("Patient", &p);
        assert!(rows.strings.iter().any(|(n, v, _)| *n == "family" && v == "bronte"));
        assert!(rows.strings.iter().any(|(n, v, _)| *n == "given" && v == "emily"));
    }

    #[test]
    fn only_references_to_resources_held_here_are_indexed() {
        let r = json!({"resourceType": "MedicationRequest",
            "subject": {"reference": "https://elsewhere.example/fhir/Patient/p1"},
            "requester": {"reference": "Practitioner/d1"}});
        let rows = extract("MedicationRequest", &r);
        assert!(rows.refs.iter().all(|(_, t, _)| t != "Patient"), "{:?}", rows.refs);
        assert!(rows.refs.iter().any(|(_, t, id)| t == "Practitioner" && id == "d1"));
    }
}
