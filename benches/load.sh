#!/usr/bin/env bash
# Load benchmark: generates PATIENTS x PER_PATIENT resources, loads them, starts the release
# server and drives it over real HTTP with wrk (16 connections, a valid token) on SQLite and on
# PostgreSQL. Prints req/s and p50/p99 per scenario, ingest rate, idle RSS and start-up time.
#
#   benches/load.sh                    # 10,000 patients x 100 resources, both databases
#   PATIENTS=1000 PER_PATIENT=20 DBS=sqlite benches/load.sh   # a quick run
#
# Needs: wrk (apt-get install wrk), PostgreSQL on 127.0.0.1:5432 for the postgres run.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-10000}
PER_PATIENT=${PER_PATIENT:-100}
DBS=${DBS:-"sqlite postgres"}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=benches/out
BIN=target/release/healthfolio
PORT=18080
BASE=http://127.0.0.1:$PORT

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release --quiet
mkdir -p "$OUT"
DATA="$OUT/data-$PATIENTS-$PER_PATIENT"
if [ ! -d "$DATA" ]; then
  echo "== generating $PATIENTS patients x $PER_PATIENT resources"
  $BIN generate --patients "$PATIENTS" --per-patient "$PER_PATIENT" --out "$DATA" --seed 7
fi
RESOURCES=$(cat "$DATA"/*.ndjson | wc -l)

wait_ready() {
  for _ in $(seq 1 500); do
    curl -fs "$BASE/healthz" >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  echo "server did not start" >&2; return 1
}

wrk_run() { # name, url, [lua script]
  local name=$1 url=$2 script=${3:-}
  local args=(-t2 -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN")
  [ -n "$script" ] && args+=(-s "$script")
  local out; out=$(wrk "${args[@]}" "$url")
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf "  %-28s %10s req/s   p50 %-9s p99 %-9s %s\n" "$name" "$rps" "$p50" "$p99" "${non2xx:+non-2xx: $non2xx}"
}

cat > "$OUT/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
wrk.body = '{"resourceType":"MedicationStatement","status":"active","subject":{"reference":"Patient/gen-p-000042"},"medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":"322236009","display":"Paracetamol 500mg tablets"}]},"effectiveDateTime":"2025-03-01","dosage":[{"text":"2 tablets - up to 4 times a day"}]}'
LUA

python3 - "$OUT/transaction.lua" <<'PY'
import json, sys
entries = []
for i in range(100):
    entries.append({"resource": {"resourceType": "MedicationStatement", "status": "active",
        "subject": {"reference": "Patient/gen-p-000043"},
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": "320000009", "display": "Simvastatin 40mg tablets"}]},
        "effectiveDateTime": "2025-03-01", "dosage": [{"text": "1 tablet - once a day - at night"}]},
        "request": {"method": "POST", "url": "MedicationStatement"}})
body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/fhir+json"\nwrk.body = [[' + body + ']]\n')
PY

for db in $DBS; do
  dir="$OUT/run-$db"
  export HEALTHFOLIO_DATA_DIR=$dir HEALTHFOLIO_ADDR=127.0.0.1:$PORT HEALTHFOLIO_LOG=warn
  if [ "$db" = postgres ]; then
    export HEALTHFOLIO_DATABASE_URL=${PG_ADMIN%/*}/healthfolio_bench
  else
    unset HEALTHFOLIO_DATABASE_URL
  fi
  # REUSE=1 measures again on the data loaded by the previous run.
  if [ "${REUSE:-0}" != 1 ] || [ ! -d "$dir" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    if [ "$db" = postgres ]; then
      psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS healthfolio_bench WITH (FORCE)" -qc "CREATE DATABASE healthfolio_bench"
    fi
    echo "== $db: loading $RESOURCES resources"
    $BIN load "$DATA" 2>/dev/null | tail -n 1
  else
    echo "== $db: reusing the loaded data"
  fi
  TOKEN=$($BIN token --scope "system/*.cruds")

  start=$(date +%s%N)
  $BIN serve & pid=$!
  wait_ready
  ready=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 1
  rss=$(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$pid/status)
  echo "  start-up to ready: ${ready} ms; idle RSS: $rss"
  MR=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/fhir/MedicationRequest?patient=gen-p-000001&_count=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
  wrk_run "read by id" "$BASE/fhir/MedicationRequest/$MR"
  wrk_run "search patient+status" "$BASE/fhir/MedicationRequest?patient=gen-p-000123&status=active"
  wrk_run "create" "$BASE/fhir/MedicationStatement" "$OUT/create.lua"
  wrk_run "transaction (100/bundle)" "$BASE/fhir" "$OUT/transaction.lua"
  echo "  (transaction resources/s = req/s x 100)"
  rss=$(awk '/VmRSS/ {print $2/1024 " MB"}' /proc/$pid/status)
  echo "  RSS after load: $rss"
  kill -TERM $pid; wait $pid || true
done
