#!/usr/bin/env bash
# Federation benchmark (release build, SQLite, real HTTP, wrk):
#   1. a search for one patient that also asks three sources, each answering after DELAY_MS
#      (small Python servers): p50 should sit just above the slowest source;
#   2. the same three sources as `on-read`: the repeat query is served from the copies, at the
#      speed of a local search (measured here without any source as the reference);
#   3. event ingest: `$process-message` with a new message id each time (messages/s).
#
#   benches/federation.sh            # DELAY_MS=20 DURATION=10s
#   DB=postgres benches/federation.sh   # the same against the local PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY_MS=${DELAY_MS:-20}
DURATION=${DURATION:-10s}
OUT=benches/out
BIN=target/release/healthfolio
PORT=18082
BASE=http://127.0.0.1:$PORT
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release --quiet
mkdir -p "$OUT"
dir="$OUT/federation"; rm -rf "$dir"; mkdir -p "$dir"
export HEALTHFOLIO_DATA_DIR=$dir HEALTHFOLIO_ADDR=127.0.0.1:$PORT HEALTHFOLIO_LOG=warn
unset HEALTHFOLIO_DATABASE_URL
if [ "${DB:-sqlite}" = postgres ]; then
  PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS healthfolio_fed_bench WITH (FORCE)" -qc "CREATE DATABASE healthfolio_fed_bench"
  export HEALTHFOLIO_DATABASE_URL=${PG_ADMIN%/*}/healthfolio_fed_bench
fi
pids=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT

# Three slow sources: each holds the patient (by NHS number) and one prescription of its own.
cat > "$OUT/slow_source.py" <<'PY'
import http.server, json, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(delay)
        if self.path.startswith("/fhir/Patient?"):
            entry = [{"resource": {"resourceType": "Patient", "id": "r1"}}]
        else:
            entry = [{"resource": {"resourceType": "MedicationRequest", "id": f"rx-{port}", "status": "active", "intent": "order",
                "subject": {"reference": "Patient/r1"}, "authoredOn": "2025-02-01",
                "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009", "display": "Paracetamol 500mg tablets"}]}}}]
        body = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entry}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
for i in 1 2 3; do python3 "$OUT/slow_source.py" $((19100 + i)) "$DELAY_MS" & pids+=($!); done

$BIN serve & pids+=($!); server=$!
for _ in $(seq 1 500); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
TOKEN=$($BIN token --scope "system/*.cruds")
P=$(curl -fs -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" -X POST "$BASE/fhir/Patient" \
  -d '{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],"name":[{"family":"Okafor","given":["Ada"]}]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" -X POST "$BASE/fhir/MedicationRequest" \
  -d '{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/'"$P"'"},"authoredOn":"2025-01-02","medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":"320000009","display":"Simvastatin 40mg tablets"}]}}'
URL="$BASE/fhir/MedicationRequest?patient=$P"

run() { # label
  wrk -t2 -c8 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$URL" \
    | awk -v l="$1" '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} END {printf "  %-44s %8s req/s  p50 %-8s p99 %s\n", l, rps, p50, p99}'
}

echo "== search for one patient"
run "local only (the reference)"
for i in 1 2 3; do $BIN source add --name "s$i" --fhir-base "http://127.0.0.1:$((19100 + i))/fhir" --policy never --timeout 2s >/dev/null; done
n=$(curl -fs -H "Authorization: Bearer $TOKEN" "$URL" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entry"]))')
echo "  ($n entries with three federated sources, each answering after ${DELAY_MS} ms)"
run "three never sources, ${DELAY_MS} ms each"
for i in 1 2 3; do $BIN source remove "s$i" >/dev/null; $BIN source add --name "c$i" --fhir-base "http://127.0.0.1:$((19100 + i))/fhir" --policy on-read --max-age 1h --timeout 2s >/dev/null; done
curl -fs -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL"   # the first query fetches and keeps copies
run "three on-read sources, repeat (copies)"

echo "== event ingest (\$process-message, a new message id each time, over 64 patients)"
# Events come for many people: 64 patients, taken in turn.
patients=""
for i in $(seq 1 64); do
  nhs=$(python3 -c "import sys; b=str(900000000 + $i); s=sum(int(d)*(10-k) for k,d in enumerate(b)); c=11 - s % 11; print(b + str(0 if c == 11 else c)) if c != 10 else print('')")
  [ -n "$nhs" ] || continue
  id=$(curl -fs -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" -X POST "$BASE/fhir/Patient" \
    -d '{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"'"$nhs"'"}],"name":[{"family":"Event","given":["P'"$i"'"]}]}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  patients="$patients\"$id\","
done
cat > "$OUT/message.lua" <<LUA
-- Every message id unique across threads and runs (a replay is answered from the first result,
-- which would flatter the figure).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
run = os.time()
patients = {${patients%,}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
request = function()
  counter = counter + 1
  local id = string.format("%d-%d-%d", run, tid, counter)
  local body = '{"resourceType":"Bundle","id":"m' .. id .. '","type":"message","entry":[' ..
    '{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"MessageHeader","eventCoding":{"system":"https://fhir.nhs.uk/CodeSystem/message-event","code":"prescription-order"},"source":{"endpoint":"https://gp.example"}}},' ..
    '{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000002","resource":{"resourceType":"MedicationRequest","identifier":[{"system":"https://eps.example/rx","value":"' .. id .. '"}],"status":"active","intent":"order","subject":{"reference":"Patient/' .. patients[counter % #patients + 1] .. '"},"authoredOn":"2025-03-01","medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":"322236009","display":"Paracetamol 500mg tablets"}]}}}]}'
  return wrk.format(nil, "/fhir/\$process-message", nil, body)
end
LUA
# Senders at once: 8 (one busy provider system's worth) and 32 (many systems): on SQLite the
# messages waiting are committed together, so more senders make bigger groups.
sent=0
for c in ${EVENT_CONNECTIONS:-8 32}; do
  echo "  $c senders at once:"
  out=$(wrk -t2 -c"$c" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" -s "$OUT/message.lua" "$BASE")
  awk '/Requests\/sec/ {print "    messages/s: " $2} /requests in/ {print "    messages sent: " $1} $1=="50%" {print "    p50 " $2} $1=="99%" {print "    p99 " $2} /Non-2xx/ {print "    non-2xx: " $NF}' <<<"$out"
  sent=$((sent + $(awk '/requests in/ {print $1}' <<<"$out")))
done
echo "  messages sent in all: $sent"
# Each message is a new prescription: the count here must match the messages sent.
stored=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/fhir/MedicationRequest?identifier=https://eps.example/rx%7C&_summary=count" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
echo "  prescriptions stored from messages: $stored"
