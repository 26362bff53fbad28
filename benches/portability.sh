#!/usr/bin/env bash
# Portability benchmark, on SQLite (release build, real HTTP):
#   1. $everything for one patient with PER_PATIENT resources (wrk: req/s, p50, p99);
#   2. archive export and import of that record (resources/s);
#   3. Bulk Data system export of everything loaded (resources/s), with the server's RSS sampled
#      every 100 ms before and during the export: flat memory means the peak stays near idle.
#
#   benches/portability.sh                              # 10,000 patients x 100 = 1M resources
#   PATIENTS=1000 PER_PATIENT=100 benches/portability.sh   # 100k, a quick run
#
# Needs: wrk, curl, python3. Loading 1M resources takes a few minutes; REUSE=1 keeps the data.
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-10000}
PER_PATIENT=${PER_PATIENT:-100}
BIG=${BIG:-1000}
OUT=benches/out
BIN=target/release/healthfolio
PORT=18081
BASE=http://127.0.0.1:$PORT
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
cargo build --release --quiet
mkdir -p "$OUT"

data="$OUT/data-$PATIENTS-$PER_PATIENT"
[ -d "$data" ] || $BIN generate --patients "$PATIENTS" --per-patient "$PER_PATIENT" --out "$data" --seed 7
big="$OUT/data-1-$BIG"
[ -d "$big" ] || $BIN generate --patients 1 --per-patient "$BIG" --out "$big" --seed 11

export HEALTHFOLIO_ADDR=127.0.0.1:$PORT HEALTHFOLIO_LOG=warn
unset HEALTHFOLIO_DATABASE_URL
pid=
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null || true' EXIT

load_into() { # data dir, source
  if [ "${REUSE:-0}" != 1 ] || [ ! -d "$1" ]; then
    rm -rf "$1"; mkdir -p "$1"
    echo "== loading $(cat "$2"/*.ndjson | wc -l) resources into $1"
    HEALTHFOLIO_DATA_DIR=$1 $BIN load "$2" 2>/dev/null | tail -n 1
  fi
}

serve() { # data dir
  HEALTHFOLIO_DATA_DIR=$1 $BIN serve & pid=$!
  for _ in $(seq 1 500); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
  TOKEN=$(HEALTHFOLIO_DATA_DIR=$1 $BIN token --scope "system/*.cruds")
}

stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }

# 1 and 2: one patient with a large record, in an instance of its own.
one="$OUT/portability-one"
load_into "$one" "$big"
serve "$one"
BIGP=gen-p-000001
count=$(curl -fs -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$BIGP/\$everything?_count=2000" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(len(b.get("entry",[])))')
echo "== \$everything for a patient with $BIG resources ($count entries on one page)"
# Latency with one client at a time, then throughput with four (2 cores: those queue).
for c in 1 4; do
  echo "  $c connection(s):"
  wrk -t1 -c$c -d10s --latency -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient/$BIGP/\$everything?_count=2000" \
    | awk '/Requests\/sec/ {print "    " $0} $1=="50%" || $1=="99%" {print "    p" $1 " " $2}'
done
stop

echo "== archive of that record"
t0=$(date +%s%N)
HEALTHFOLIO_DATA_DIR=$one $BIN export --patient "$BIGP" --out "$OUT/big.tar" >/dev/null
t1=$(date +%s%N)
n=$(tar -xOf "$OUT/big.tar" record.ndjson | wc -l)
echo "  export: $n entries in $(( (t1 - t0) / 1000000 )) ms (process start included)"
fresh="$OUT/portability-import"; rm -rf "$fresh"
t0=$(date +%s%N)
# Another instance (its own address): a file is refused by the service that made it.
HEALTHFOLIO_DATA_DIR=$fresh HEALTHFOLIO_BASE_URL=https://another.example $BIN import "$OUT/big.tar" | tail -n 1
t1=$(date +%s%N)
echo "  import into an empty instance: $(( (t1 - t0) / 1000000 )) ms (process start and migrations included)"

# 3: bulk export of the whole data set.
dir="$OUT/portability-sqlite"
load_into "$dir" "$data"
serve "$dir"
echo "== Bulk Data system export of everything"
idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
loc=$(curl -fsi -H "Authorization: Bearer $TOKEN" -H "Prefer: respond-async" "$BASE/fhir/\$export" | awk 'tolower($1)=="content-location:" {print $2}' | tr -d '\r')
t0=$(date +%s%N)
peak=$idle
while :; do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status); [ "$rss" -gt "$peak" ] && peak=$rss
  code=$(curl -s -o "$OUT/manifest.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$loc")
  [ "$code" = 200 ] && break
  [ "$code" = 202 ] || { echo "status $code" >&2; cat "$OUT/manifest.json" >&2; exit 1; }
  sleep 0.1
done
t1=$(date +%s%N)
total=$(python3 -c 'import json; print(sum(o["count"] for o in json.load(open("'"$OUT/manifest.json"'"))["output"]))')
ms=$(( (t1 - t0) / 1000000 ))
echo "  $total resources in $ms ms: $(( total * 1000 / (ms > 0 ? ms : 1) )) resources/s"
echo "  server RSS: idle $((idle / 1024)) MB, peak during export $((peak / 1024)) MB"
stop
