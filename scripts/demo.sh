#!/usr/bin/env bash
# The README's run command: sets up everything on a fresh machine, starts triage-node on the
# embedded default (SQLite in ./demo-data), pushes real sample studies (a head CT and an adult
# chest CR from pydicom-data, and four demo chest cases made from that CR, two with a synthetic
# nodule) with DCMTK storescu, waits for the studies to complete and be triaged by the shipped
# demonstration model (models/demo-nodule: NOT clinically validated), prints the results, the
# heatmaps it would return, a summary, and stops the node cleanly.
#
# Results to the PACS (SR + Secondary Capture) arrive with the next issue (see README, "Status").
# The demo runs with the node's public demo keys (deid.demo_keys): fine for these public sample
# files, never for patient data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
# libtorch for tch: the one in the venv's PyTorch wheel (its folders end up on the binary's rpath).
export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
cargo build --release --locked
BIN=$PWD/target/release/triage-node
DEMO=$PWD/demo-data
rm -rf "$DEMO"; mkdir -p "$DEMO"
export TRIAGE__STORAGE__DATA_DIR=$DEMO TRIAGE__INGEST__STUDY_QUIET_PERIOD=3s TRIAGE__DICOM__PORT=${PORT:-11112}
export TRIAGE__DEID__DEMO_KEYS=true

"$BIN" ae add DEMO_CT --host 127.0.0.1
"$BIN" ae list
"$BIN" serve 2> "$DEMO/node.log" &
NODE=$!
trap 'kill -TERM $NODE 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'listening port=' "$DEMO/node.log" && break; sleep 0.1; done
grep 'listening port=' "$DEMO/node.log"

export TCP_NODELAY=1
echo "== C-ECHO"
echoscu -v -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT"
echo "== C-STORE: a head CT slice (JPEG 2000 lossless) and an adult chest CR (explicit VR), then 9 more CT slices"
storescu -R -xv -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/ts/ct_j2k_lossless.dcm .testdata/ts/cr_explicit_le.dcm
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/series/ct_0[1-9].dcm
echo "== C-STORE: four demo chest cases (labels: $(sed -n '2,5p' .testdata/demo-cases/labels.csv | tr '\n' ' '))"
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/demo-cases/case00[0-3].dcm
echo "== waiting for the 3 s quiet period that completes each study, then its triage"
for _ in $(seq 100); do
  [ "$(grep -c 'study triaged' "$DEMO/node.log" || true)" -ge 6 ] && break; sleep 0.2
done
kill -TERM $NODE; wait $NODE || true
trap - EXIT
echo "== node log"
cat "$DEMO/node.log"
echo "== study results (the CT is not_applicable: the demo model takes chest radiographs only)"
"$BIN" results
echo "== the same demo cases through \`triage-node infer\`, with heatmaps in $DEMO/heatmaps"
"$BIN" infer --heatmaps "$DEMO/heatmaps" .testdata/demo-cases/case00[0-3].dcm | cut -c1-200
ls "$DEMO/heatmaps"
echo "== summary"
"$BIN" status
echo "stored files: $(find "$DEMO/store" -name '*.dcm' | wc -l) under $DEMO/store"
echo "== the chest CR's identifying header attributes, as sent and as stored (de-identified)"
show() { dcmdump -q "$1" | grep -E '^\((0010,00[123]0|0020,000d|0008,0050|0012,006[234])\)' || true; }
is_cr() { dcmdump -q "$1" | grep -q '^(0008,0060) CS \[CR\]'; }
CR_STORED=$(for f in "$DEMO"/store/*/*.dcm; do is_cr "$f" && echo "$f" && break; done)
echo "-- sent: .testdata/ts/cr_explicit_le.dcm"; show .testdata/ts/cr_explicit_le.dcm
echo "-- stored: $CR_STORED"; show "$CR_STORED"
CR_UID=$(dcmdump -q "$CR_STORED" | sed -n 's/^(0008,0018) UI \[\(.*\)\].*/\1/p')
echo "== re-identification of that instance from the sealed map (audited)"
"$BIN" reid "$CR_UID" --purpose "demo"
echo "== audit trail"
"$BIN" audit verify
