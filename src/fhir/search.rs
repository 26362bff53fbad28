//! Search: parameters parsed into SQL over the index tables, keyset paging, includes.

use super::index::{normalize, normalize_system};
use super::params::{self, find, Kind, Param};
use super::store::{Row, Stored, ROW_COLUMNS};
use super::time::{parse_range, Range, OPEN_HI, OPEN_LO};
use super::validate::NUL_REFUSED;
use super::{FhirError, Interaction};
use crate::access::AccessContext;
use crate::db::{Bind, Conn, Int, Sql};
use diesel::QueryableByName;

pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 1000;
const MAX_INCLUDED: i64 = 1000;

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub rtype: String,
    pub params: Vec<(String, String)>,
    /// `Patient/{id}/{type}`: the compartment the URL names.
    pub compartment: Option<String>,
    /// `Prefer: handling=strict`.
    pub strict: bool,
}

#[derive(Debug, Default)]
pub struct SearchResult {
    pub matches: Vec<Stored>,
    pub included: Vec<Stored>,
    pub total: Option<i64>,
    /// The parameters that were applied, for the self link.
    pub applied: Vec<(String, String)>,
    pub next_cursor: Option<String>,
    pub warnings: Vec<String>,
    pub summary_count: bool,
    pub elements: Option<Vec<String>>,
    /// Federated results: (full URL at their source, resource).
    pub remote: Vec<(String, serde_json::Value)>,
    /// Sources that could not answer.
    pub unavailable: Vec<String>,
    /// The record searched moved to another provider: its new home.
    pub moved_to: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sort {
    param: Option<&'static str>,
    last_updated: bool,
    desc: bool,
}

#[derive(Debug)]
struct Include {
    source: String,
    param: Option<&'static Param>,
    target: Option<String>,
    iterate: bool,
}

#[derive(Debug, Default)]
struct Plan {
    conds: Sql,
    sort: Option<Sort>,
    count: i64,
    cursor: Option<(i64, i64)>,
    includes: Vec<Include>,
    revincludes: Vec<Include>,
    total: bool,
}

const CONTROL: &[&str] =
    &["_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor", "_format", "_pretty"];

/// Runs a search on `conn` as `ctx`.
pub fn run(conn: &mut Conn, ctx: &AccessContext, req: &SearchRequest) -> Result<SearchResult, FhirError> {
    ctx.require(&req.rtype, Interaction::Search)?;
    let mut out = SearchResult::default();
    let mut plan = Plan { count: DEFAULT_COUNT, ..Plan::default() };
    for (name, value) in &req.params {
        // Queries also arrive inside Bundles and conditional references, not only in URLs.
        if name.contains('\0') || value.contains('\0') {
            return Err(FhirError::invalid(format!("search parameter '{}': {NUL_REFUSED}", name.replace('\0', ""))));
        }
        let known = if CONTROL.contains(&base_name(name)) {
            control(&req.rtype, name, value, &mut plan, &mut out)?
        } else {
            filter(&mut plan.conds, "r", &req.rtype, name, value)?
        };
        if known {
            if name != "_cursor" {
                out.applied.push((name.clone(), value.clone()));
            }
        } else if req.strict {
            return Err(FhirError::invalid(format!("unknown search parameter '{name}' for {}", req.rtype)));
        } else {
            out.warnings.push(format!("search parameter '{name}' is not supported for {} and was ignored", req.rtype));
        }
    }
    limit_to_compartment(&mut plan.conds, "r", &req.rtype, req.compartment.as_deref());
    ctx.limit_search(&mut plan.conds, "r", &req.rtype, Interaction::Search);
    scope_constraints(&mut plan.conds, ctx, &req.rtype, Interaction::Search)?;
    correlate_when_one_patient(&mut plan.conds);
    if plan.total || out.summary_count {
        out.total = Some(count(conn, &req.rtype, &plan.conds)?);
    }
    if out.summary_count {
        return Ok(out);
    }
    let rows = page(conn, &req.rtype, &plan)?;
    let more = rows.len() as i64 > plan.count;
    let keep: Vec<(Row, i64)> = rows.into_iter().take(plan.count as usize).collect();
    if more {
        out.next_cursor = keep.last().map(|(r, sk)| format!("{sk}_{}", r.rid));
    } else if plan.cursor.is_none() && out.total.is_none() {
        out.total = Some(keep.len() as i64);
    }
    let rids: Vec<i64> = keep.iter().map(|(r, _)| r.rid).collect();
    out.matches = keep.into_iter().map(|(r, _)| Stored::from(r)).collect();
    out.included = includes(conn, ctx, &plan, &rids, &out.matches)?;
    Ok(out)
}

fn base_name(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Handles a result-control parameter; returns whether it was understood.
fn control(rtype: &str, name: &str, value: &str, plan: &mut Plan, out: &mut SearchResult) -> Result<bool, FhirError> {
    match name {
        "_count" => {
            let n: i64 = value
                .parse()
                .map_err(|_| FhirError::invalid(format!("_count must be a whole number, not '{value}'")))?;
            plan.count = n.clamp(0, MAX_COUNT);
            if n == 0 {
                out.summary_count = true;
            }
        }
        "_sort" => plan.sort = Some(parse_sort(rtype, value)?),
        "_include" | "_include:iterate" => plan.includes.push(parse_include(value, name.ends_with(":iterate"), false)?),
        "_revinclude" | "_revinclude:iterate" => {
            plan.revincludes.push(parse_include(value, name.ends_with(":iterate"), true)?)
        }
        "_summary" => match value {
            "count" => out.summary_count = true,
            "false" => {}
            other => return Err(FhirError::invalid(format!("_summary={other} is not supported (use count or false)"))),
        },
        "_elements" => out.elements = Some(value.split(',').map(|s| s.trim().to_string()).collect()),
        "_total" => match value {
            "accurate" | "estimate" => plan.total = true,
            "none" => {}
            other => return Err(FhirError::invalid(format!("_total={other} is not one of none, estimate, accurate"))),
        },
        "_cursor" => plan.cursor = Some(parse_cursor(value)?),
        "_format" | "_pretty" => return Ok(false),
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_cursor(v: &str) -> Result<(i64, i64), FhirError> {
    let bad = || FhirError::invalid("the paging cursor is malformed; follow the server's next link");
    let (a, b) = v.rsplit_once('_').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

fn parse_sort(rtype: &str, value: &str) -> Result<Sort, FhirError> {
    let first = value.split(',').next().unwrap_or_default().trim();
    let (desc, name) = match first.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, first),
    };
    if name == "_lastUpdated" {
        return Ok(Sort { param: None, last_updated: true, desc });
    }
    match find(rtype, name) {
        Some(p) if p.kind == Kind::Date => Ok(Sort { param: Some(p.name), last_updated: false, desc }),
        _ => Err(FhirError::invalid(format!(
            "_sort={name} is not supported for {rtype}: sort by _lastUpdated or a date parameter"
        ))),
    }
}

fn parse_include(value: &str, iterate: bool, rev: bool) -> Result<Include, FhirError> {
    let parts: Vec<&str> = value.split(':').collect();
    let bad = || FhirError::invalid(format!("'{value}' is not SourceType:param[:TargetType]"));
    let (source, pname) = match parts.as_slice() {
        [s, p] | [s, p, _] => (*s, *p),
        _ => return Err(bad()),
    };
    if super::resource_type(source).is_none() {
        return Err(bad());
    }
    let param = if pname == "*" && !rev {
        None
    } else {
        Some(find(source, pname).filter(|p| p.kind == Kind::Reference).ok_or_else(bad)?)
    };
    Ok(Include { source: source.to_string(), param, target: parts.get(2).map(|t| t.to_string()), iterate })
}

/// Adds the condition of one filter parameter; returns false when the parameter is unknown.
fn filter(conds: &mut Sql, alias: &str, rtype: &str, name: &str, value: &str) -> Result<bool, FhirError> {
    if let Some((head, chained)) = name.split_once('.') {
        return chain(conds, alias, rtype, head, chained, value);
    }
    let (pname, modifier) = match name.split_once(':') {
        Some((p, m)) => (p, Some(m)),
        None => (name, None),
    };
    if pname == "_id" {
        let ids: Vec<Bind> = value.split(',').map(|s| Bind::Text(s.to_string())).collect();
        conds.push(&format!(" AND {alias}.id IN ")).list(ids);
        return Ok(true);
    }
    if pname == "_lastUpdated" {
        let (prefix, range) = parse_date_value(value)?;
        conds.push(" AND (");
        date_condition(conds, &format!("{alias}.last_updated"), &format!("{alias}.last_updated"), prefix, range);
        conds.push(")");
        return Ok(true);
    }
    let Some(param) = find(rtype, pname) else { return Ok(false) };
    if modifier == Some("missing") {
        let neg = match value {
            "true" => "NOT ",
            "false" => "",
            _ => return Err(FhirError::invalid(format!("{name} must be true or false"))),
        };
        conds.push(&format!(" AND {alias}.rid {neg}IN (SELECT rid FROM {} WHERE param = ", table(param.kind)));
        conds.text(param.name).push(")");
        return Ok(true);
    }
    if modifier == Some("identifier") {
        return chain(conds, alias, rtype, pname, "identifier", value);
    }
    match param.kind {
        Kind::Token => token(conds, alias, param, modifier, value)?,
        Kind::String => string(conds, alias, param, modifier, value)?,
        Kind::Date => {
            no_modifier(name, modifier)?;
            date(conds, alias, param, value)?
        }
        Kind::Reference => reference(conds, alias, rtype, param, modifier, value)?,
    }
    Ok(true)
}

fn no_modifier(name: &str, modifier: Option<&str>) -> Result<(), FhirError> {
    match modifier {
        None => Ok(()),
        Some(m) => Err(FhirError::invalid(format!("modifier :{m} is not supported on {name}"))),
    }
}

fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Token => "idx_token",
        Kind::String => "idx_string",
        Kind::Date => "idx_date",
        Kind::Reference => "idx_ref",
    }
}

/// Splits a comma-separated OR list, honouring `\,` escapes.
fn alternatives(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                if let Some(s) = out.last_mut() {
                    s.push(',');
                }
                chars.next();
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    out
}

fn token(conds: &mut Sql, alias: &str, p: &Param, modifier: Option<&str>, value: &str) -> Result<(), FhirError> {
    let neg = match modifier {
        None => "",
        Some("not") => "NOT ",
        Some(m) => return Err(FhirError::invalid(format!("modifier :{m} is not supported on {}", p.name))),
    };
    conds.push(&format!(" AND {alias}.rid {neg}IN (SELECT rid FROM idx_token WHERE param = "));
    conds.text(p.name).push(" AND (");
    for (i, alt) in alternatives(value).iter().enumerate() {
        if i > 0 {
            conds.push(" OR ");
        }
        match alt.split_once('|') {
            Some(("", code)) => conds.push("(code = ").text(code).push(" AND system IS NULL)"),
            Some((system, "")) => conds.push("system = ").text(normalize_system(system)),
            Some((system, code)) => {
                conds.push("(code = ").text(code).push(" AND system = ").text(normalize_system(system)).push(")")
            }
            None => conds.push("code = ").text(alt.clone()),
        };
    }
    conds.push("))");
    Ok(())
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn string(conds: &mut Sql, alias: &str, p: &Param, modifier: Option<&str>, value: &str) -> Result<(), FhirError> {
    conds.push(&format!(" AND {alias}.rid IN (SELECT rid FROM idx_string WHERE param = "));
    conds.text(p.name).push(" AND (");
    for (i, alt) in alternatives(value).iter().enumerate() {
        if i > 0 {
            conds.push(" OR ");
        }
        match modifier {
            Some("exact") => conds.push("raw = ").text(alt.clone()),
            Some("contains") => {
                conds.push("value LIKE ").text(format!("%{}%", like_escape(&normalize(alt)))).push(" ESCAPE '\\'")
            }
            None => conds.push("value LIKE ").text(format!("{}%", like_escape(&normalize(alt)))).push(" ESCAPE '\\'"),
            Some(m) => return Err(FhirError::invalid(format!("modifier :{m} is not supported on {}", p.name))),
        };
    }
    conds.push("))");
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

fn parse_date_value(value: &str) -> Result<(Prefix, Range), FhirError> {
    let (prefix, rest) = match value.get(..2) {
        Some("eq") => (Prefix::Eq, &value[2..]),
        Some("ne") => (Prefix::Ne, &value[2..]),
        Some("gt") => (Prefix::Gt, &value[2..]),
        Some("lt") => (Prefix::Lt, &value[2..]),
        Some("ge") => (Prefix::Ge, &value[2..]),
        Some("le") => (Prefix::Le, &value[2..]),
        Some("sa") => (Prefix::Sa, &value[2..]),
        Some("eb") => (Prefix::Eb, &value[2..]),
        Some("ap") => (Prefix::Ap, &value[2..]),
        _ => (Prefix::Eq, value),
    };
    let range = parse_range(rest).ok_or_else(|| {
        FhirError::invalid(format!(
            "'{value}' is not a FHIR date search value (e.g. ge2025-01-01, 2025-03, lt2025-01-01T10:00:00Z)"
        ))
    })?;
    Ok((prefix, range))
}

/// The condition of a prefix on a target range [lo, hi] against the search range (conformance §2.2).
fn date_condition(conds: &mut Sql, lo: &str, hi: &str, prefix: Prefix, r: Range) {
    match prefix {
        Prefix::Eq => conds.push(&format!("{lo} >= ")).int(r.lo).push(&format!(" AND {hi} <= ")).int(r.hi),
        Prefix::Ne => {
            conds.push(&format!("NOT ({lo} >= ")).int(r.lo).push(&format!(" AND {hi} <= ")).int(r.hi).push(")")
        }
        Prefix::Gt => conds.push(&format!("{hi} > ")).int(r.hi),
        Prefix::Lt => conds.push(&format!("{lo} < ")).int(r.lo),
        Prefix::Ge => conds.push(&format!("{hi} >= ")).int(r.lo),
        Prefix::Le => conds.push(&format!("{lo} <= ")).int(r.hi),
        Prefix::Sa => conds.push(&format!("{lo} > ")).int(r.hi),
        Prefix::Eb => conds.push(&format!("{hi} < ")).int(r.lo),
        Prefix::Ap => {
            // "Approximately": within 10% of the distance from now, and at least a day.
            let now = super::now_micros();
            let gap = ((now - r.lo).abs() / 10).max(86_400_000_000);
            conds
                .push(&format!("{lo} <= "))
                .int(r.hi.saturating_add(gap))
                .push(&format!(" AND {hi} >= "))
                .int(r.lo.saturating_sub(gap))
        }
    };
}

fn date(conds: &mut Sql, alias: &str, p: &Param, value: &str) -> Result<(), FhirError> {
    let alts = alternatives(value);
    let parsed: Vec<(Prefix, Range)> = alts.iter().map(|a| parse_date_value(a)).collect::<Result<_, _>>()?;
    conds.push(&format!(" AND {alias}.rid IN (SELECT rid FROM idx_date WHERE param = "));
    conds.text(p.name).push(" AND (");
    for (i, (prefix, range)) in parsed.into_iter().enumerate() {
        if i > 0 {
            conds.push(" OR ");
        }
        conds.push("(");
        date_condition(conds, "lo", "hi", prefix, range);
        conds.push(")");
    }
    conds.push("))");
    Ok(())
}

/// `123`, `Patient/123` and `{base}/Patient/123` all name the same target.
fn reference_target<'a>(
    value: &'a str,
    type_modifier: Option<&'a str>,
) -> Result<(Option<&'a str>, &'a str), FhirError> {
    if value.contains('/') {
        let (t, id) = super::reference::local(value)
            .or_else(|| super::reference::url_tail(value))
            .ok_or_else(|| FhirError::invalid(format!("'{value}' is not a reference (id, Type/id or URL)")))?;
        Ok((Some(t), id))
    } else {
        Ok((type_modifier, value))
    }
}

fn reference(
    conds: &mut Sql,
    alias: &str,
    rtype: &str,
    p: &Param,
    modifier: Option<&str>,
    value: &str,
) -> Result<(), FhirError> {
    let type_modifier = match modifier {
        None => None,
        Some(m) if super::resource_type(m).is_some() => Some(m),
        Some(m) => return Err(FhirError::invalid(format!("modifier :{m} is not supported on {}", p.name))),
    };
    let alts = alternatives(value);
    let targets: Vec<(Option<&str>, &str)> =
        alts.iter().map(|a| reference_target(a, type_modifier.or(p.target))).collect::<Result<_, _>>()?;
    // The compartment column answers `patient=` without touching the reference index.
    let compartment_param = p.name == "patient" && params::compartment_path(rtype) == p.paths.first().copied();
    if compartment_param && targets.iter().all(|(t, _)| t.is_none_or(|t| t == "Patient")) {
        let ids: Vec<Bind> = targets.iter().map(|(_, id)| Bind::Text(id.to_string())).collect();
        conds.push(&format!(" AND {alias}.patient_id IN ")).list(ids);
        return Ok(());
    }
    conds.push(&format!(" AND {alias}.rid IN (SELECT rid FROM idx_ref WHERE param = "));
    conds.text(p.name).push(" AND (");
    for (i, (t, id)) in targets.iter().enumerate() {
        if i > 0 {
            conds.push(" OR ");
        }
        conds.push("(target_id = ").text(id.to_string());
        if let Some(t) = t {
            conds.push(" AND target_type = ").text(t.to_string());
        }
        conds.push(")");
    }
    conds.push("))");
    Ok(())
}

/// `patient.identifier=…` (and `patient:identifier=…`): a condition on the referenced resource.
fn chain(conds: &mut Sql, alias: &str, rtype: &str, head: &str, chained: &str, value: &str) -> Result<bool, FhirError> {
    let (pname, type_modifier) = match head.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (head, None),
    };
    let Some(param) = find(rtype, pname).filter(|p| p.kind == Kind::Reference) else { return Ok(false) };
    let target = type_modifier
        .or(param.target)
        .ok_or_else(|| FhirError::invalid(format!("chain on {pname} needs a type: use {pname}:Patient.{chained}")))?;
    if chained.contains('.') {
        return Err(FhirError::invalid("only one level of chaining is supported"));
    }
    let inner_alias = format!("{alias}c");
    let mut inner = Sql::new("");
    if !filter(&mut inner, &inner_alias, target, chained, value)? {
        return Err(FhirError::invalid(format!("'{chained}' is not a search parameter of {target}")));
    }
    conds.push(&format!(" AND {alias}.rid IN (SELECT x.rid FROM idx_ref x WHERE x.param = "));
    conds.text(param.name).push(" AND x.target_type = ").text(target);
    conds.push(&format!(
        " AND x.target_id IN (SELECT {inner_alias}.id FROM resources {inner_alias} WHERE {inner_alias}.res_type = "
    ));
    conds.text(target).push(&format!(" AND {inner_alias}.deleted = 0"));
    conds.append(&inner);
    conds.push("))");
    Ok(true)
}

/// Query-constrained scopes (`….rs?status=active`), of the token and of the patient's grant:
/// each set of alternatives must match; a parameter the type does not have matches nothing.
fn scope_constraints(conds: &mut Sql, ctx: &AccessContext, rtype: &str, what: Interaction) -> Result<(), FhirError> {
    let sets =
        [ctx.scopes.constraints(rtype, what), ctx.grant_scopes.as_ref().and_then(|g| g.constraints(rtype, what))];
    for alts in sets.into_iter().flatten() {
        conds.push(" AND (1 = 0");
        for alt in alts {
            conds.push(" OR (1 = 1");
            for (k, v) in &alt {
                if !filter(conds, "r", rtype, k, v)? {
                    conds.push(" AND 1 = 0");
                }
            }
            conds.push(")");
        }
        conds.push(")");
    }
    Ok(())
}

/// Whether this server holds a scope's query constraint on every route, so that an authorization
/// may grant it (SMART 2.2 leaves the set to the server): token parameters of the scope's type
/// (`category`, `code`, `status`, `clinical-status`, …; for `*`, of some type served), each value
/// `system|code`, `code`, `system|` or a comma list of them. Those the consent screen can also
/// say in plain words, and a write can be matched against exactly.
pub fn supported_constraint(rtype: Option<&str>, filter: &[(String, String)]) -> bool {
    let token_of = |t: &str, name: &str| find(t, name).is_some_and(|p| p.kind == Kind::Token);
    filter.iter().all(|(name, value)| {
        let known = match rtype {
            Some(t) => token_of(t, name),
            None => super::RESOURCE_TYPES.iter().any(|t| token_of(t, name)),
        };
        known && !value.is_empty() && !value.contains('\0') && alternatives(value).iter().all(|v| !v.is_empty())
    })
}

/// Limits `r` to `types`, each within the caller's query-constrained scopes for reading it: a
/// plain `IN` list when no scope narrows any of them.
pub(crate) fn readable_types_condition(q: &mut Sql, ctx: &AccessContext, types: &[&str]) -> Result<(), FhirError> {
    let mut plain = Vec::new();
    let mut narrowed = Vec::new();
    for t in types {
        let mut c = Sql::new("");
        scope_constraints(&mut c, ctx, t, Interaction::Read)?;
        if c.is_empty() {
            plain.push(*t);
        } else {
            narrowed.push((*t, c));
        }
    }
    if narrowed.is_empty() && !plain.is_empty() {
        q.push(" AND r.res_type IN ").list(plain.iter().map(|t| Bind::Text((*t).into())));
        return Ok(());
    }
    q.push(" AND (1 = 0");
    if !plain.is_empty() {
        q.push(" OR r.res_type IN ").list(plain.iter().map(|t| Bind::Text((*t).into())));
    }
    for (t, c) in narrowed {
        q.push(" OR (r.res_type = ").text(t).append(&c).push(")");
    }
    q.push(")");
    Ok(())
}

/// Whether the resource at `rid` satisfies the caller's query-constrained scopes for `what`.
pub(crate) fn within_constraints(
    conn: &mut Conn,
    ctx: &AccessContext,
    rtype: &str,
    rid: i64,
    what: Interaction,
) -> Result<bool, FhirError> {
    let mut conds = Sql::new("");
    scope_constraints(&mut conds, ctx, rtype, what)?;
    if conds.is_empty() {
        return Ok(true);
    }
    let mut q = Sql::new("SELECT COUNT(*) AS n FROM resources r WHERE r.rid = ");
    q.int(rid).append(&conds);
    Ok(conn.first::<Int>(&q)?.is_some_and(|r| r.n > 0))
}

/// Within one patient's compartment the compartment index finds a handful of rows, so the index
/// conditions are better probed per row (EXISTS) than materialised for the whole table (IN), which
/// for `status=active` would list every active prescription of every patient.
fn correlate_when_one_patient(conds: &mut Sql) {
    if !(conds.contains("r.patient_id IN") || conds.contains("r.patient_id = ")) {
        return;
    }
    for table in ["idx_token", "idx_string", "idx_date", "idx_ref"] {
        for neg in ["", "NOT "] {
            conds.replace(
                &format!("r.rid {neg}IN (SELECT rid FROM {table} WHERE "),
                &format!("{neg}EXISTS (SELECT 1 FROM {table} x WHERE x.rid = r.rid AND "),
            );
        }
    }
}

pub(crate) fn limit_to_compartment(conds: &mut Sql, alias: &str, rtype: &str, patient: Option<&str>) {
    let Some(p) = patient else { return };
    if rtype == "Patient" {
        conds.push(&format!(" AND {alias}.id = ")).text(p);
    } else if !params::is_shared(rtype) {
        conds.push(&format!(" AND {alias}.patient_id = ")).text(p);
    }
}

fn count(conn: &mut Conn, rtype: &str, conds: &Sql) -> Result<i64, FhirError> {
    let mut q = Sql::new("SELECT COUNT(*) AS n FROM resources r WHERE r.res_type = ");
    q.text(rtype).push(" AND r.deleted = 0");
    q.append(conds);
    Ok(conn.first::<Int>(&q)?.map_or(0, |r| r.n))
}

#[derive(QueryableByName)]
struct SortedRow {
    #[diesel(embed)]
    resource: Row,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    sk: i64,
}

fn sort_key(sort: Option<Sort>) -> (String, bool) {
    match sort {
        None => ("r.rid".to_string(), false),
        Some(Sort { last_updated: true, desc, .. }) => ("r.last_updated".to_string(), desc),
        Some(Sort { param: Some(p), desc, .. }) => {
            let (agg, missing) = if desc { ("MAX(d.hi)", OPEN_LO) } else { ("MIN(d.lo)", OPEN_HI) };
            (
                format!("COALESCE((SELECT {agg} FROM idx_date d WHERE d.rid = r.rid AND d.param = '{p}'), {missing})"),
                desc,
            )
        }
        Some(Sort { desc, .. }) => ("r.rid".to_string(), desc),
    }
}

fn page(conn: &mut Conn, rtype: &str, plan: &Plan) -> Result<Vec<(Row, i64)>, FhirError> {
    let (sk, desc) = sort_key(plan.sort);
    let mut q =
        Sql::new(&format!("SELECT * FROM (SELECT {ROW_COLUMNS}, {sk} AS sk FROM resources r WHERE r.res_type = "));
    q.text(rtype).push(" AND r.deleted = 0");
    q.append(&plan.conds);
    q.push(") q");
    let (cmp, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    if let Some((s, rid)) = plan.cursor {
        q.push(&format!(" WHERE (q.sk {cmp} ")).int(s);
        q.push(" OR (q.sk = ").int(s).push(&format!(" AND q.rid {cmp} ")).int(rid).push("))");
    }
    q.push(&format!(" ORDER BY q.sk {dir}, q.rid {dir} LIMIT ")).int(plan.count + 1);
    // Searches of one shape (parameters, values bound) share a prepared statement: PostgreSQL
    // then parses and plans it once per connection rather than on every request.
    let rows: Vec<SortedRow> = conn.load(&q.reused_while_few())?;
    Ok(rows.into_iter().map(|r| (r.resource, r.sk)).collect())
}

fn includes(
    conn: &mut Conn,
    ctx: &AccessContext,
    plan: &Plan,
    rids: &[i64],
    matches: &[Stored],
) -> Result<Vec<Stored>, FhirError> {
    let mut out: Vec<Stored> = Vec::new();
    if rids.is_empty() {
        return Ok(out);
    }
    for inc in &plan.includes {
        out.extend(forward(conn, ctx, inc, rids)?);
    }
    for inc in &plan.revincludes {
        out.extend(reverse(conn, ctx, inc, matches)?);
    }
    // `:iterate` applies once more to what was included (one level, which covers Medication → …).
    let iterating: Vec<&Include> = plan.includes.iter().filter(|i| i.iterate).collect();
    if !iterating.is_empty() && !out.is_empty() {
        let inc_rids = rids_of(conn, &out)?;
        for inc in iterating {
            out.extend(forward(conn, ctx, inc, &inc_rids)?);
        }
    }
    let mut seen: std::collections::HashSet<(String, String)> =
        matches.iter().map(|m| (m.rtype.clone(), m.id.clone())).collect();
    out.retain(|s| seen.insert((s.rtype.clone(), s.id.clone())));
    Ok(out)
}

fn rids_of(conn: &mut Conn, items: &[Stored]) -> Result<Vec<i64>, FhirError> {
    let mut q = Sql::new("SELECT rid AS n FROM resources WHERE ");
    for (i, s) in items.iter().enumerate() {
        q.push(if i == 0 { "(" } else { " OR (" });
        q.push("res_type = ").text(s.rtype.clone()).push(" AND id = ").text(s.id.clone()).push(")");
    }
    Ok(conn.load::<Int>(&q)?.into_iter().map(|r| r.n).collect())
}

/// Included resources pass the same checks as a read: scope, and reach for this caller.
fn readable(conn: &mut Conn, ctx: &AccessContext, rows: Vec<Row>) -> Result<Vec<Stored>, FhirError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (rid, rtype) = (r.rid, r.res_type.clone());
        let s = Stored::from(r);
        if ctx.may_touch(conn, &s.rtype, s.patient_id.as_deref(), Interaction::Read)?
            && within_constraints(conn, ctx, &rtype, rid, Interaction::Read)?
        {
            out.push(s);
        }
    }
    Ok(out)
}

fn forward(conn: &mut Conn, ctx: &AccessContext, inc: &Include, rids: &[i64]) -> Result<Vec<Stored>, FhirError> {
    let mut q = Sql::new(&format!(
        "SELECT {ROW_COLUMNS} FROM resources r JOIN idx_ref x ON x.target_type = r.res_type AND x.target_id = r.id \
         JOIN resources s ON s.rid = x.rid WHERE r.deleted = 0 AND s.res_type = "
    ));
    q.text(inc.source.clone()).push(" AND x.rid IN ").list(rids.iter().map(|r| Bind::Int(*r)));
    if let Some(p) = inc.param {
        q.push(" AND x.param = ").text(p.name);
    }
    if let Some(t) = &inc.target {
        q.push(" AND r.res_type = ").text(t.clone());
    }
    q.push(" LIMIT ").int(MAX_INCLUDED);
    let rows = conn.load(&q)?;
    readable(conn, ctx, rows)
}

fn reverse(conn: &mut Conn, ctx: &AccessContext, inc: &Include, matches: &[Stored]) -> Result<Vec<Stored>, FhirError> {
    let Some(p) = inc.param else { return Ok(Vec::new()) };
    let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.deleted = 0 AND r.res_type = "));
    q.text(inc.source.clone());
    q.push(" AND r.rid IN (SELECT rid FROM idx_ref WHERE param = ").text(p.name).push(" AND (");
    for (i, m) in matches.iter().enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        q.push("(target_type = ").text(m.rtype.clone()).push(" AND target_id = ").text(m.id.clone()).push(")");
    }
    q.push(")) LIMIT ").int(MAX_INCLUDED);
    let rows = conn.load(&q)?;
    readable(conn, ctx, rows)
}

/// Conditional writes on the same criteria take turns until each commits (inside the caller's
/// transaction): of concurrent conditional creates, the first creates and the others find what
/// it created. The criteria are compared as a set of parameters, in any order.
pub fn serialise_conditional<'q>(
    conn: &mut Conn,
    criteria: impl IntoIterator<Item = (&'q str, &'q str)>,
) -> Result<(), FhirError> {
    let keys: Vec<String> = criteria
        .into_iter()
        .map(|(rtype, query)| {
            let mut params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
            params.sort();
            format!("conditional {rtype}?{}", serde_urlencoded::to_string(&params).unwrap_or_default())
        })
        .collect();
    Ok(conn.take_turns(keys.iter().map(String::as_str))?)
}

/// Resolves a conditional query (`If-None-Exist`, conditional update, conditional references)
/// to the ids it matches, as `ctx` sees them.
pub fn matching_ids(conn: &mut Conn, ctx: &AccessContext, rtype: &str, query: &str) -> Result<Vec<String>, FhirError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| FhirError::invalid(format!("'{query}' is not a valid search query")))?;
    if params.is_empty() {
        return Err(FhirError::invalid("a conditional operation needs at least one search parameter"));
    }
    let req = SearchRequest {
        rtype: rtype.to_string(),
        params: params.into_iter().chain([("_count".to_string(), "2".to_string())]).collect(),
        compartment: None,
        strict: true,
    };
    let result = run(conn, ctx, &req)?;
    Ok(result.matches.into_iter().map(|s| s.id).collect())
}
