"""Parses every FHIR resource in a folder of outputs (`*.json`: one resource; `*.ndjson`: one a
line) into the FHIR R4 (4.0.1) models of fhir.resources 6.4.0, which check what the JSON Schema
cannot: required elements (also primitive ones), choice types given once, and the lexical form
of every primitive. Run by tests/it/fhir_validation.rs: `python validate.py DIR`; prints one
block per problem and exits 1 when there is any."""

import json
import sys
from pathlib import Path

import fhir.resources
from fhir.resources import construct_fhir_element

assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__


def resources(folder):
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".ndjson":
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    yield f"{path.name}:{n}", json.loads(line)
        elif path.suffix == ".json":
            yield path.name, json.loads(path.read_text())


problems = checked = 0
for where, resource in resources(sys.argv[1]):
    checked += 1
    try:
        construct_fhir_element(resource["resourceType"], resource)
    except Exception as e:  # pydantic's ValidationError, or LookupError for an unknown type
        problems += 1
        print(f"{where}: {e}")
print(f"fhir.resources R4: {checked} resources checked, {problems} with problems")
sys.exit(1 if problems else 0)
