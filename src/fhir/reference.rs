//! What a `reference` in a resource points at. One rule for every path that writes (the API,
//! bundles, archive import, `$phr-import`, transfer, federation, events): only a relative
//! `Type/id` names a resource held here. An absolute URL names a resource on some server; it is
//! never taken for one of ours because its tail looks like one (an archive once placed a
//! prescription in another patient's record through `https://elsewhere/fhir/Patient/<their id>`).
//! Absolute URLs at this server's own base are made relative where a request enters the store
//! ([`relativise`]), so clients may still send them.

use serde_json::Value;

/// A reference as this server resolves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `Type/id` or `Type/id/_history/n`: a resource held here.
    Local(&'a str, &'a str),
    /// An absolute URL or a `urn:`: held elsewhere (or, in a Bundle, resolved by the Bundle).
    External,
    /// `#id`: a resource contained in the one that refers to it.
    Contained,
    /// Anything else.
    Malformed,
}

pub fn target(reference: &str) -> Target<'_> {
    if reference.starts_with('#') {
        Target::Contained
    } else if reference.starts_with("urn:") || reference.contains("://") {
        Target::External
    } else {
        type_and_id(reference).map_or(Target::Malformed, |(t, id)| Target::Local(t, id))
    }
}

/// The resource held here that `reference` names, if it names one.
pub fn local(reference: &str) -> Option<(&str, &str)> {
    match target(reference) {
        Target::Local(t, id) => Some((t, id)),
        _ => None,
    }
}

/// The resource that `reference` names on the server at `base`: relative references are taken
/// as relative to it, absolute ones must start with it. For reading another server's resources
/// (federation), where `base` is that server's.
pub fn at_base<'a>(reference: &'a str, base: &str) -> Option<(&'a str, &'a str)> {
    let relative = match strip_base(reference, base) {
        Some(rest) => rest,
        None if reference.contains("://") => return None,
        None => reference,
    };
    local(relative)
}

fn strip_base<'a>(reference: &'a str, base: &str) -> Option<&'a str> {
    reference.strip_prefix(base.trim_end_matches('/')).and_then(|r| r.strip_prefix('/'))
}

/// The `Type/id` an absolute URL ends with, whatever its server: only for matching a search value
/// against stored references, never for deciding where a write lands.
pub fn url_tail(url: &str) -> Option<(&str, &str)> {
    let head = url.split_once("/_history/").map_or(url, |(head, _)| head);
    let mut parts = head.rsplitn(3, '/');
    let (id, t) = (parts.next()?, parts.next()?);
    type_and_id(&head[head.len() - id.len() - t.len() - 1..])
}

/// `Type/id`, optionally with `/_history/n`, as (type, id).
fn type_and_id(r: &str) -> Option<(&str, &str)> {
    let r = r.split_once("/_history/").map_or(r, |(head, _)| head);
    let (t, id) = r.split_once('/')?;
    let type_ok =
        t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && t.chars().all(|c| c.is_ascii_alphabetic());
    (type_ok && super::valid_id(id)).then_some((t, id))
}

/// Rewrites absolute references at `base` (this server) to relative ones, so that they resolve
/// like any other reference to a resource held here.
pub fn relativise(v: &mut Value, base: &str) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                match (k.as_str(), &*child) {
                    ("reference", Value::String(s)) => {
                        if let Some(rest) = strip_base(s, base) {
                            *child = Value::String(rest.to_string());
                        }
                    }
                    _ => relativise(child, base),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| relativise(c, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_relative_references_are_local() {
        assert_eq!(target("Patient/p1"), Target::Local("Patient", "p1"));
        assert_eq!(target("Patient/p1/_history/3"), Target::Local("Patient", "p1"));
        assert_eq!(target("https://elsewhere.example/fhir/Patient/p1"), Target::External);
        assert_eq!(target("urn:uuid:0b7a"), Target::External);
        assert_eq!(target("#med"), Target::Contained);
        assert_eq!(target("patient/p1"), Target::Malformed);
        assert_eq!(target("Patient/p 1"), Target::Malformed);
        assert_eq!(target("Patient/a/b"), Target::Malformed);
    }

    #[test]
    fn a_base_decides_which_urls_are_its_own() {
        let base = "https://here.example/fhir";
        assert_eq!(at_base("https://here.example/fhir/Patient/p1", base), Some(("Patient", "p1")));
        assert_eq!(at_base("Patient/p1", base), Some(("Patient", "p1")));
        assert_eq!(at_base("https://elsewhere.example/fhir/Patient/p1", base), None);
        assert_eq!(at_base("https://here.example/fhirx/Patient/p1", base), None);
        let mut r = json!({"subject": {"reference": "https://here.example/fhir/Patient/p1"},
                           "performer": [{"reference": "https://elsewhere.example/fhir/Practitioner/x"}]});
        relativise(&mut r, &format!("{base}/"));
        assert_eq!(r["subject"]["reference"], "Patient/p1");
        assert_eq!(r["performer"][0]["reference"], "https://elsewhere.example/fhir/Practitioner/x");
    }
}
