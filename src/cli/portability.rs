//! `healthfolio export` and `healthfolio import`.

use crate::access::AccessContext;
use crate::fhir::search::{self, SearchRequest};
use crate::portability::archive::{self, ImportOptions};
use crate::Healthfolio;
use std::path::Path;

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn by_nhs_number(hf: &Healthfolio, nhs: &str) -> Result<String, Box<dyn std::error::Error>> {
    let req = SearchRequest {
        rtype: "Patient".into(),
        params: vec![("identifier".into(), format!("{}|{}", crate::fhir::NHS_NUMBER_SYSTEM, nhs.replace(' ', "")))],
        compartment: None,
        strict: true,
    };
    let mut conn = hf.db.conn()?;
    let found = search::run(&mut conn, &AccessContext::operator("export"), &req)?;
    Ok(found.matches.into_iter().next().map(|s| s.id).ok_or_else(|| format!("no patient with NHS number {nhs}"))?)
}

pub fn export(hf: &Healthfolio, patient: Option<String>, nhs: Option<String>, out: &Path) -> CliResult {
    let id = match (patient, nhs) {
        (Some(p), _) => p.trim_start_matches("Patient/").to_string(),
        (None, Some(n)) => by_nhs_number(hf, &n)?,
        _ => return Err("give --patient or --nhs-number".into()),
    };
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let manifest = archive::export(&hf.store, &AccessContext::operator("export"), &id, std::io::BufWriter::new(file))?;
    std::fs::rename(&tmp, out)?;
    hf.store.audit.flush();
    println!("exported Patient/{id}: {} entries to {} (sha256 {})", manifest.resources, out.display(), manifest.sha256);
    Ok(())
}

pub fn import(hf: &Healthfolio, file: &Path, into: Option<String>, append: bool) -> CliResult {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (manifest, lines) =
        archive::read_archive(std::io::BufReader::new(f)).map_err(|e| format!("{}: {e}", file.display()))?;
    let opts = ImportOptions { into: into.map(|p| p.trim_start_matches("Patient/").to_string()), append };
    let label = file.display().to_string();
    let mut bar: Option<crate::cli::load::Progress> = None;
    let mut show = |done: usize, total: usize| {
        bar.get_or_insert_with(|| crate::cli::load::Progress::new(&label, total as u64)).set(done as u64)
    };
    let report = archive::import_reporting(
        &hf.store,
        &AccessContext::operator("import"),
        &manifest.source,
        lines,
        &opts,
        &mut show,
    )
    .map_err(|e| format!("{}: nothing was imported: {e}", file.display()))?;
    if let Some(bar) = bar {
        bar.finish();
    }
    hf.store.audit.flush();
    println!(
        "imported into Patient/{}: {} created, {} already present, {} consent/audit entries kept with the source",
        report.patient, report.created, report.already_present, report.not_imported
    );
    Ok(())
}
