#!/usr/bin/env bash
# Portal pages for a patient with a large record (release build, SQLite, real HTTP): the patient
# signs in through an invitation like a real one, then wrk asks for each page with one connection,
# so the latency is the server's time for the page (target p50 < 50 ms at 500 medicine entries).
#
#   benches/portal.sh          # ENTRIES=1000 resources (about half of them medicine entries)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000}
DURATION=${DURATION:-5s}
OUT=benches/out
BIN=target/release/healthfolio
PORT=18083
BASE=http://127.0.0.1:$PORT
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release --quiet
mkdir -p "$OUT"
data="$OUT/data-1-$ENTRIES"
[ -d "$data" ] || $BIN generate --patients 1 --per-patient "$ENTRIES" --out "$data" --seed 11 >/dev/null
dir="$OUT/portal"; rm -rf "$dir"; mkdir -p "$dir"
export HEALTHFOLIO_DATA_DIR=$dir HEALTHFOLIO_ADDR=127.0.0.1:$PORT HEALTHFOLIO_LOG=warn
unset HEALTHFOLIO_DATABASE_URL
$BIN load "$data" 2>/dev/null | tail -n 1
meds=$(cat "$data"/Medication{Request,Statement}.ndjson | wc -l)
echo "== patient gen-p-000001 with $meds medicine entries (prescriptions and statements)"
link=$($BIN patient invite --patient gen-p-000001 | head -n 1)
$BIN serve & pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 500); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
jar="$OUT/portal.cookies"; rm -f "$jar"
path=${link#http://127.0.0.1:$PORT}
csrf=$(curl -fs -c "$jar" "$BASE$path" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//; s/"//')
curl -fs -o /dev/null -b "$jar" -c "$jar" -X POST "$BASE$path" \
  --data-urlencode "csrf=$csrf" --data-urlencode "email=bench@example.org" \
  --data-urlencode "password=bench password 1" --data-urlencode "confirm=bench password 1"
cookie=$(awk '$6=="hf_session" {print "hf_session=" $7}' "$jar")
[ -n "$cookie" ] || { echo "no session cookie" >&2; exit 1; }
mr=$(head -n 1 "$data/MedicationRequest.ndjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for page in /portal /portal/medicines /portal/timeline /portal/allergies "/portal/medicines/prescription/$mr" /portal/print /portal/sharing /portal/access-log; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$BASE$page")
  wrk -t1 -c1 -d"$DURATION" --latency -H "Cookie: $cookie" "$BASE$page" \
    | awk -v p="$page" -v c="$code" '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} END {printf "  %-44s %s  p50 %-9s p99 %-9s %s req/s\n", p, c, p50, p99, rps}'
done
