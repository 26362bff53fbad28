#!/usr/bin/env bash
# The shared-record roadmap, stage by stage, on one machine, by configuration only.
#
#   A (127.0.0.1:9001) plays a GP practice's system: `healthfolio demo` (its demo data, a backend
#     client with a key, and Amara Okafor's grant to the practice's organisation);
#   B (127.0.0.1:9002) is the shared record, where Amara has her own record and login.
#
# Each stage changes one setting at B and shows what B then answers for Amara's prescriptions.
#
#   cargo build --release && deploy/stages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/healthfolio}
WORK=${WORK:-$(mktemp -d)}
A=127.0.0.1:9001
B=127.0.0.1:9002
export HEALTHFOLIO_LOG=warn
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
at_b() { HEALTHFOLIO_DATA_DIR="$WORK/b" HEALTHFOLIO_ADDR="$B" "$BIN" "$@"; }
ready() { for _ in $(seq 1 300); do curl -fs "http://$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "$1 did not start" >&2; exit 1; }

echo "== A: the GP system, with demo data"
"$BIN" demo --data-dir "$WORK/a" --addr "$A" > "$WORK/a.txt" & pids+=($!)
ready "$A"
provider=$(awk '/provider:/ {print $3}' "$WORK/a.txt")
echo "   our client at A: $provider (its ES384 key: $WORK/a/demo-provider-es384.der)"

echo "== B: the shared record; Amara Okafor (NHS 943 476 5919) has a login here"
patient=$(echo "a shared record demo" | at_b patient add --nhs-number 9434765919 --given Amara --family Okafor \
  --birth-date 1958-04-12 --email amara@example.org --password-stdin | awk '{print $1}' | sed 's|Patient/||')
HEALTHFOLIO_DATA_DIR="$WORK/b" HEALTHFOLIO_ADDR="$B" "$BIN" serve --sync-interval 2 & pids+=($!)
ready "$B"
token=$(at_b token --scope 'system/*.cruds')

# `show EXPECTED`: prints what B answers and stops the run if it is not EXPECTED (CI runs this).
show() {
  local got; got=$(answers)
  echo "$got"
  grep -qF "$1" <<<"$got" || { echo "   expected: $1" >&2; exit 1; }
}
expect() { echo "   $1: $2"; [ "$2" = "$3" ] || { echo "   expected $3" >&2; exit 1; }; }

answers() { # what B answers for Amara's prescriptions, by origin
  curl -fs -H "Authorization: Bearer $token" "http://$B/fhir/MedicationRequest?patient=$patient&_count=100" | python3 -c '
import json, sys
b = json.load(sys.stdin)
held, live, notes = 0, 0, []
for e in b.get("entry", []):
    r = e["resource"]
    if e.get("search", {}).get("mode") == "outcome":
        notes += [i.get("diagnostics", "") for i in r.get("issue", [])]
    elif e.get("fullUrl", "").startswith("http://'"$B"'"):
        held += 1
    else:
        live += 1
tags = sorted({t["code"] for e in b.get("entry", []) for t in e["resource"].get("meta", {}).get("tag", [])})
print("   B answers: %d held at B, %d fetched live; tagged with origin: %s" % (held, live, ", ".join(tags) or "none"))
for n in notes: print("   note:", n)'
}

echo; echo "== 1. Federated: B asks A at query time and stores nothing"
at_b source add --name gp --fhir-base "http://$A/fhir" --auth client-credentials --client-id "$provider" \
  --key-file "$WORK/a/demo-provider-es384.der" --key-id demo-provider-1 --policy never --timeout 2s
show "0 held at B, 3 fetched live"

echo; echo "== 2. Hybrid: what a query fetched is kept at B (owned by the source) for 10 minutes"
at_b source update gp --policy on-read --max-age 10m
show "3 held at B, 0 fetched live"; show "3 held at B, 0 fetched live"

echo; echo "== 3. Persisted copy: B keeps in step in the background (every 2 s here), and takes events"
at_b source update gp --policy always
sleep 3
show "3 held at B, 0 fetched live"
a_token=$("$BIN" token --data-dir "$WORK/a" --addr "$A" --scope 'system/*.cruds')
a_patient=$(curl -fs -H "Authorization: Bearer $a_token" "http://$A/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
curl -fs -o /dev/null -H "Authorization: Bearer $a_token" -H 'Content-Type: application/fhir+json' "http://$A/fhir/MedicationRequest" \
  -d '{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/'"$a_patient"'"},"authoredOn":"2026-11-20","medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":"320000009","display":"Simvastatin 40mg tablets"}]}}'
echo "   A issues a new prescription; a few seconds later:"
sleep 5
show "4 held at B, 0 fetched live"
msg='{"resourceType":"Bundle","id":"msg-1","type":"message","entry":[
 {"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"MessageHeader","eventCoding":{"system":"https://fhir.nhs.uk/CodeSystem/message-event","code":"prescription-order"},"source":{"endpoint":"https://pharmacy.example"}}},
 {"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000002","resource":{"resourceType":"MedicationRequest","identifier":[{"system":"https://eps.example/rx","value":"EPS-1"}],"status":"active","intent":"order","subject":{"reference":"Patient/'"$patient"'"},"authoredOn":"2026-11-01","medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":"322236009","display":"Paracetamol 500mg tablets"}]}}}]}'
for _ in 1 2; do   # sent twice: idempotent on the message id
  curl -fs -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' -d "$msg" "http://$B/fhir/\$process-message"
done
echo "   after one event message (sent twice):"; show "5 held at B, 0 fetched live"

echo; echo "== 4. Single and only: B adopts the copies; providers read and write at B"
at_b source adopt gp
copy=$(curl -fs -H "Authorization: Bearer $token" "http://$B/fhir/MedicationRequest?patient=$patient&_count=1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
show "5 held at B, 0 fetched live"

echo; echo "== 5. Patient in control: a provider system at B reaches Amara's record only while she shares it"
openssl ecparam -name secp384r1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$WORK/pharmacy.pem"
python3 - "$WORK/pharmacy.pem" > "$WORK/pharmacy.jwks" <<'PY'
import base64, subprocess, sys
der = subprocess.run(["openssl", "pkey", "-in", sys.argv[1], "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
point, b64 = der[-97:], lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print('{"keys":[{"kty":"EC","crv":"P-384","kid":"k1","alg":"ES384","x":"%s","y":"%s"}]}' % (b64(point[1:49]), b64(point[49:])))
PY
pharmacy=$(at_b client add --name "Riverside Pharmacy" --type backend --jwks-file "$WORK/pharmacy.jwks" \
  --scope 'system/*.rs' --organization Organization/riverside-pharmacy | awk '/client_id/ {print $2}')
# SMART Backend Services: a signed assertion (ES384) for an access token.
pharmacy_token=$(python3 - "$WORK/pharmacy.pem" "$pharmacy" "http://$B/oauth/token" <<'PY'
import base64, json, subprocess, sys, time, urllib.parse, urllib.request, uuid
key, client, aud = sys.argv[1:]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "ES384", "kid": "k1", "typ": "JWT"}).encode())
body = b64(json.dumps({"iss": client, "sub": client, "aud": aud, "exp": int(time.time()) + 240, "jti": str(uuid.uuid4())}).encode())
der = subprocess.run(["openssl", "dgst", "-sha384", "-sign", key], input=f"{head}.{body}".encode(), capture_output=True, check=True).stdout
i, raw = 2, b""
for _ in range(2):  # the DER signature's two INTEGERs, as the fixed 48-byte r || s a JWS wants
    n = der[i + 1]; raw += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(48, b"\0"); i += 2 + n
form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "system/*.rs",
    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "client_assertion": f"{head}.{body}.{b64(raw)}"}).encode()
print(json.load(urllib.request.urlopen(aud, form))["access_token"])
PY
)
read_as_pharmacy() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $pharmacy_token" "http://$B/fhir/MedicationRequest/$copy"; }
expect "before Amara shares, the pharmacy's read answers (not found: not its to see)" "$(read_as_pharmacy)" 404
at_b grant add --patient "$patient" --organization Organization/riverside-pharmacy --scope patient/MedicationRequest.rs >/dev/null
expect "Amara shares her prescriptions (as on the portal's Sharing page), then" "$(read_as_pharmacy)" 200
grant=$(at_b grant list --patient "$patient" | awk '/riverside-pharmacy/ {print $1; exit}')
at_b grant revoke "$grant" >/dev/null
expect "Amara stops sharing: the very next read answers" "$(read_as_pharmacy)" 404
echo; echo "Done. Sign in at http://$B/portal as amara@example.org with the password \"a shared record demo\"."
