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

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src").to_string_lossy().into_owned();
        let module = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_string();
        let Some(level) = LAYERS.iter().position(|m| *m == module) else {
            assert!(matches!(module.as_str(), "lib" | "main"), "{rel}: a module src/lib.rs does not place");
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read");
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
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
