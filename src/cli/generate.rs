//! `healthfolio generate`: synthetic, valid, realistic NDJSON for benchmarks and load tests.
//! Seeded: the same (patients, per patient, seed) always writes byte-identical files. Every
//! resource has a client-assigned id, so loading is an upsert by id.

use super::demo_data::{dosage, medicine_concept};
use crate::catalogue::MEDICINES;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct GenerateSummary {
    pub patients: usize,
    pub resources: usize,
    pub files: Vec<PathBuf>,
}

const TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "Patient",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationStatement",
    "Condition",
    "AllergyIntolerance",
];
const PRACTITIONERS: usize = 20;
const GIVEN: &[&str] = &[
    "Amara", "David", "Priya", "Tomasz", "Grace", "Mohammed", "Siobhan", "Oliver", "Fatima", "Emily", "Kwame", "Zofia",
];
const FAMILY: &[&str] =
    &["Okafor", "Hughes", "Sharma", "Nowak", "Evans", "Khan", "Murphy", "Smith", "Ali", "Jones", "Mensah", "Kowalska"];
const PROBLEMS: &[(&str, &str)] = &[
    ("38341003", "Hypertensive disorder"),
    ("55822004", "Hyperlipidemia"),
    ("195967001", "Asthma"),
    ("44054006", "Diabetes mellitus type 2"),
];

/// A distinct NHS number in the test range 999 000 0000–999 999 9999 for each n (< 500,000) that
/// passes Modulus 11: n owns the stems 2n and 2n+1, and at most one of two neighbours has check 10.
fn nhs_number(n: usize) -> String {
    let with_check = |k: usize| {
        let s = format!("999{:06}", k % 1_000_000);
        let sum: u32 = s.chars().filter_map(|c| c.to_digit(10)).zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        match 11 - sum % 11 {
            10 => None,
            11 => Some(format!("{s}0")),
            c => Some(format!("{s}{c}")),
        }
    };
    with_check(2 * n).or_else(|| with_check(2 * n + 1)).unwrap_or_default()
}

fn date(rng: &mut StdRng, from_year: i32) -> String {
    format!("{}-{:02}-{:02}", rng.gen_range(from_year..=2025), rng.gen_range(1..=12), rng.gen_range(1..=28))
}

struct Writers {
    files: Vec<(String, BufWriter<File>, PathBuf)>,
    count: usize,
}

impl Writers {
    fn write(&mut self, v: &Value) -> std::io::Result<()> {
        let t = v["resourceType"].as_str().unwrap_or_default();
        if let Some((_, w, _)) = self.files.iter_mut().find(|(n, _, _)| n == t) {
            serde_json::to_writer(&mut *w, v)?;
            w.write_all(b"\n")?;
            self.count += 1;
        }
        Ok(())
    }
}

fn shared(w: &mut Writers) -> std::io::Result<()> {
    w.write(
        &json!({"resourceType": "Organization", "id": "gen-org-1", "active": true, "name": "Generated Medical Practice",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y99999"}]}),
    )?;
    for i in 0..PRACTITIONERS {
        w.write(&json!({"resourceType": "Practitioner", "id": format!("gen-pr-{i:03}"), "active": true,
            "name": [{"family": FAMILY[i % FAMILY.len()], "given": [GIVEN[(i * 7) % GIVEN.len()]], "prefix": ["Dr"]}]}))?;
    }
    Ok(())
}

/// How many of each kind a patient gets: ~40% prescriptions, 25% dispenses, 20% statements,
/// 10% problems, 5% allergies; at least one of each from five resources up.
fn mix(m: usize) -> [usize; 5] {
    if m < 5 {
        return [m, 0, 0, 0, 0];
    }
    let allergies = (m / 20).max(1);
    let problems = (m / 10).max(1);
    let statements = (m / 5).max(1);
    let dispenses = (m / 4).max(1);
    [m - allergies - problems - statements - dispenses, dispenses, statements, problems, allergies]
}

fn patient(rng: &mut StdRng, w: &mut Writers, n: usize, per: usize) -> std::io::Result<()> {
    let pid = format!("gen-p-{n:06}");
    let subject = json!({"reference": format!("Patient/{pid}")});
    w.write(&json!({"resourceType": "Patient", "id": pid, "active": true,
        "identifier": [{"system": crate::fhir::NHS_NUMBER_SYSTEM, "value": nhs_number(n)}],
        "name": [{"family": FAMILY[rng.gen_range(0..FAMILY.len())], "given": [GIVEN[rng.gen_range(0..GIVEN.len())]]}],
        "gender": if rng.gen_bool(0.5) { "female" } else { "male" }, "birthDate": date(rng, 1930).replace("2025", "1990"),
        "generalPractitioner": [{"reference": "Organization/gen-org-1"}]}))?;
    let [requests, dispenses, statements, problems, allergies] = mix(per);
    for k in 0..requests {
        let m = &MEDICINES[rng.gen_range(0..MEDICINES.len())];
        let status = ["active", "active", "completed", "stopped"][rng.gen_range(0..4)];
        let mut mr = json!({"resourceType": "MedicationRequest", "id": format!("gen-mr-{n:06}-{k:04}"), "status": status, "intent": "order",
            "medicationCodeableConcept": medicine_concept(m), "subject": subject, "authoredOn": date(rng, 2018),
            "requester": {"reference": format!("Practitioner/gen-pr-{:03}", rng.gen_range(0..PRACTITIONERS))},
            "dosageInstruction": [dosage(m)], "substitution": {"allowedBoolean": true}});
        if status == "stopped" {
            mr["statusReason"] = json!({"text": "Stopped at review"});
        }
        w.write(&mr)?;
    }
    for k in 0..dispenses {
        let m = &MEDICINES[rng.gen_range(0..MEDICINES.len())];
        let rx = format!("MedicationRequest/gen-mr-{n:06}-{:04}", rng.gen_range(0..requests.max(1)));
        w.write(&json!({"resourceType": "MedicationDispense", "id": format!("gen-md-{n:06}-{k:04}"), "status": "completed",
            "medicationCodeableConcept": medicine_concept(m), "subject": subject, "authorizingPrescription": [{"reference": rx}],
            "quantity": {"value": m.pack, "unit": m.unit.1}, "whenHandedOver": format!("{}T10:00:00Z", date(rng, 2020))}))?;
    }
    for k in 0..statements {
        let m = &MEDICINES[rng.gen_range(0..MEDICINES.len())];
        w.write(&json!({"resourceType": "MedicationStatement", "id": format!("gen-ms-{n:06}-{k:04}"), "status": (["active", "completed"][rng.gen_range(0..2)]),
            "medicationCodeableConcept": medicine_concept(m), "subject": subject, "effectiveDateTime": date(rng, 2019), "dosage": [{"text": m.dose}]}))?;
    }
    for k in 0..problems {
        let (code, display) = PROBLEMS[rng.gen_range(0..PROBLEMS.len())];
        w.write(&json!({"resourceType": "Condition", "id": format!("gen-co-{n:06}-{k:04}"), "subject": subject, "onsetDateTime": date(rng, 1990),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}}))?;
    }
    for k in 0..allergies {
        w.write(&json!({"resourceType": "AllergyIntolerance", "id": format!("gen-al-{n:06}-{k:04}"), "patient": subject, "criticality": (["low", "high"][rng.gen_range(0..2)]),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Substance with penicillin structure"}]}, "recordedDate": date(rng, 2010)}))?;
    }
    Ok(())
}

pub fn generate(
    patients: usize,
    per_patient: usize,
    seed: u64,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> std::io::Result<GenerateSummary> {
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    for t in TYPES {
        let path = out.join(format!("{t}.ndjson"));
        files.push((t.to_string(), BufWriter::with_capacity(1 << 20, File::create(&path)?), path));
    }
    let mut w = Writers { files, count: 0 };
    let mut rng = StdRng::seed_from_u64(seed);
    shared(&mut w)?;
    for n in 1..=patients {
        patient(&mut rng, &mut w, n, per_patient)?;
        progress(n, patients);
    }
    let mut paths = Vec::new();
    for (_, mut f, p) in w.files {
        f.flush()?;
        paths.push(p);
    }
    Ok(GenerateSummary { patients, resources: w.count, files: paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_valid_and_in_the_test_range() {
        let dir = |s: &str| std::env::temp_dir().join(format!("hf-gen-{s}-{}", std::process::id()));
        let (a, b) = (dir("a"), dir("b"));
        let s = generate(5, 20, 9, &a, &mut |_, _| {}).unwrap();
        generate(5, 20, 9, &b, &mut |_, _| {}).unwrap();
        assert_eq!(s.resources, 1 + PRACTITIONERS + 5 * 21);
        for f in &s.files {
            let name = f.file_name().unwrap();
            let (x, y) = (std::fs::read(f).unwrap(), std::fs::read(b.join(name)).unwrap());
            assert_eq!(x, y, "{name:?} is byte-identical");
            for line in String::from_utf8(x).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let t = v["resourceType"].as_str().unwrap();
                assert_eq!(crate::fhir::validate::validate(t, &v), Ok(()), "{line}");
            }
        }
        assert!((1..20000)
            .all(|n| crate::fhir::validate::nhs_number_valid(&nhs_number(n)) && nhs_number(n).starts_with("999")));
        let distinct: std::collections::HashSet<String> = (1..20000).map(nhs_number).collect();
        assert_eq!(distinct.len(), 19999, "one NHS number per patient");
        let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
    }
}
