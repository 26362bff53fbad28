//! The layering `src/lib.rs` states is the one the code has: every top-level module refers only
//! to modules below it, so there is no import cycle.

/// Top to bottom, as `src/lib.rs` lists them.
const LAYERS: &[&str] = &[
    "cli",
    "web",
    "portal",
    "portability",
    "federation",
    "auth",
    "fhir",
    "audit",
    "access",
    "consent",
    "scope",
    "catalogue",
    "config",
    "db",
    "time",
];

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every source file under src/: its path there, its top-level module, and its code before any
/// unit tests (which may reach anywhere).
fn files() -> Vec<(String, String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("under src").to_string_lossy().into_owned();
            let module = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&f).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            (rel, module, code)
        })
        .collect()
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let mut wrong = Vec::new();
    for (rel, module, code) in files() {
        let Some(level) = LAYERS.iter().position(|m| *m == module) else {
            assert!(matches!(module.as_str(), "lib" | "main"), "{rel}: a module src/lib.rs does not place");
            continue;
        };
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if let Some(at) = LAYERS.iter().position(|m| *m == used) {
                if at <= level && used != module {
                    wrong.push(format!("{rel} uses crate::{used}"));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "modules using a layer above (or beside) them:\n{}", wrong.join("\n"));
}

/// Which module's SQL may name each table: the one that owns it (`db::backup` copies them all).
const OWNERS: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "accounts",
            "assertion_jtis",
            "auth_codes",
            "clients",
            "invitations",
            "login_failures",
            "refresh_tokens",
            "revocations",
            "sessions",
            "signing_keys",
        ],
    ),
    ("audit", &["audit_events"]),
    ("consent", &["grants", "grant_permissions"]),
    ("db", &["jobs"]),
    ("federation", &["federated_sources", "processed_messages", "source_fetches", "source_links"]),
    (
        "fhir",
        &[
            "closed_records",
            "idx_date",
            "idx_ref",
            "idx_string",
            "idx_token",
            "patient_nhs_numbers",
            "resource_versions",
            "resources",
        ],
    ),
    ("portability", &["imported_origins", "transfer_partners", "transfers"]),
];

#[test]
fn each_table_is_read_and_written_by_its_owner_only() {
    let mut wrong = Vec::new();
    for (rel, module, code) in files() {
        if rel == "db/backup.rs" {
            continue;
        }
        for (owner, tables) in OWNERS.iter().filter(|(owner, _)| *owner != module.as_str()) {
            for table in *tables {
                for verb in ["FROM", "JOIN", "INTO", "UPDATE"] {
                    if code.contains(&format!("{verb} {table} ")) || code.contains(&format!("{verb} {table}\"")) {
                        wrong.push(format!("{rel}: {verb} {table} (owned by {owner})"));
                    }
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "SQL naming another module's table:\n{}", wrong.join("\n"));
}
