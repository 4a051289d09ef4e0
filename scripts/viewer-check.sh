#!/usr/bin/env bash
# Does a real viewer show what the node sends? Not part of the test suite. Runs the node (the
# debug build, as scripts/demo.sh runs it, with the demonstration models) with a local PACS
# (Orthanc with its DICOMweb plugin, on loopback) as its result destination, sends it a positive
# demo chest CR and the demo head CT series (a synthetic lesion), waits for the TID 1500 SR, the
# Parametric Map and the Secondary Capture to arrive in the PACS, then opens each study in OHIF
# Viewer 3.13.2 (the prebuilt dist/ of the npm package @ohif/app, served with Orthanc's DICOMweb
# on one loopback origin by scripts/viewer_drive.py) in headless Chromium and saves screenshots:
# the image with the Parametric Map overlaid, and the SR with its image regions. It prints, per
# object, whether OHIF loaded it or the error it failed with. For the head CT it also stores two
# DIAGNOSTIC copies (new series, described so) to tell OHIF's limits from the node's content: the
# map padded to one frame per slice, and the SR with only its region groups. Found with OHIF 3.13.2:
# the node's single-frame map of a 24-slice series fails (RangeError in @cornerstonejs/adapters'
# ParametricMap: the overlay buffer is sized by the map's frames, indexed by the source slice),
# the padded copy overlays the key slice; the SR fails on its region-less measurement group (the
# probability), the copy shows the regions; the demo chest CR shows black (its PixelSpacing is
# 0\0) and a map of a projection radiograph (no Plane Orientation) cannot load.
#
#   scripts/viewer-check.sh [OUT_DIR]          (default target/viewer)
#
# SOURCE=node (the default): OHIF loads the AI results from the node itself. The node delivers
# them to a DCMTK storescp (so Orthanc holds only the source images, sent to it directly) and
# scripts/viewer_drive.py serve-node puts both DICOMweb services behind the origin's /dicomweb:
# searches merged, each series' requests to whichever holds it, the node's with a reader token
# (OHIF needs no auth), WADO-RS frames of the node's objects cut from its instance retrieve.
# SOURCE=pacs: the results delivered to Orthanc and OHIF reading Orthanc only (as before), with
# the DIAGNOSTIC copies. Found with SOURCE=node (2026-12-07): both studies list the node's three
# result series beside the PACS's source series; the Secondary Capture loads from the node; the
# map (with the source images from Orthanc) and the SR fail with the same errors as above.
#
# Needs: what scripts/setup-test-env.sh installs (.venv, .testdata, DCMTK, Orthanc), chromium and
# chromium-driver, npm; installs orthanc-dicomweb (apt) if missing and fetches @ohif/app into
# target/ohif (npm pack, once). No internet beyond the package registries. KEEP=1 stops before
# the screenshots and leaves everything running until Ctrl-C (the viewer URLs are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(mkdir -p "${1:-target/viewer}" && cd "${1:-target/viewer}" && pwd)
OHIF_VERSION=3.13.2
OHIF=$ROOT/target/ohif/$OHIF_VERSION
SOURCE=${SOURCE:-node}
case "$SOURCE" in node|pacs) ;; *) echo "viewer-check: SOURCE is node or pacs" >&2; exit 2;; esac

for tool in Orthanc storescu dcmdump chromium chromedriver npm; do
  command -v "$tool" >/dev/null || { echo "viewer-check: $tool is missing (scripts/setup-test-env.sh; apt-get install chromium chromium-driver npm)" >&2; exit 1; }
done
[ -x .venv/bin/python ] && [ -d .testdata/demo-cases ] || scripts/setup-test-env.sh
DICOMWEB=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if [ ! -e "$DICOMWEB" ]; then
  echo "== installing orthanc-dicomweb (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y orthanc-dicomweb >/dev/null
fi
if [ ! -f "$OHIF/dist/index.html" ]; then
  echo "== fetching @ohif/app@$OHIF_VERSION (npm pack) into $OHIF"
  rm -rf "$OHIF"; mkdir -p "$OHIF"
  (cd "$OHIF" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null && tar xzf ohif-app-*.tgz && mv package/dist dist && rm -rf package ohif-app-*.tgz)
fi
BIN=$ROOT/target/debug/triage-node
if [ ! -x "$BIN" ]; then
  export LIBTORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
  cargo build --locked
fi

RUN=$OUT/run
rm -rf "$RUN"; mkdir -p "$RUN"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PACS_DICOM=$(free_port); PACS_HTTP=$(free_port); NODE_PORT=$(free_port); NODE_HTTP=$(free_port); VIEWER_PORT=$(free_port)
SINK_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
RESULTS_TO=$PACS_DICOM
if [ "$SOURCE" = node ]; then
  mkdir -p "$RUN/sink"
  storescp --ignore "$SINK_PORT" 2> "$RUN/sink.log" &
  PIDS+=($!)
  RESULTS_TO=$SINK_PORT
fi

cat > "$RUN/orthanc.json" <<JSON
{ "Name": "viewer-check-pacs", "StorageDirectory": "$RUN/pacs", "IndexDirectory": "$RUN/pacs",
  "DicomAet": "PACS", "DicomPort": $PACS_DICOM, "HttpPort": $PACS_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "Plugins": [ "$DICOMWEB" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado", "Ssl": false },
  "DicomModalities": { "triage": [ "TRIAGE", "127.0.0.1", $NODE_PORT ] } }
JSON
Orthanc "$RUN/orthanc.json" 2> "$RUN/orthanc.log" &
PIDS+=($!)
for _ in $(seq 100); do .venv/bin/python tests/peers/orthanc.py ready "$PACS_HTTP" 2>/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PACS_HTTP/dicom-web/studies" >/dev/null || { echo "Orthanc's DICOMweb does not answer; log:" >&2; tail -20 "$RUN/orthanc.log" >&2; exit 1; }
echo "== PACS: Orthanc with DICOMweb, DICOM 127.0.0.1:$PACS_DICOM, HTTP $PACS_HTTP"

export TRIAGE__STORAGE__DATA_DIR=$RUN/node TRIAGE__INGEST__STUDY_QUIET_PERIOD=3s TRIAGE__DICOM__PORT=$NODE_PORT
export TRIAGE__DEID__DEMO_KEYS=true TRIAGE__HTTP__PORT=$NODE_HTTP TRIAGE__RESULTS__DESTINATIONS=PACS
# The viewer proxy's reader token (a fresh secret each run; only the proxy knows it).
VIEWER_NODE_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export TRIAGE_HTTP_TOKENS="viewer:reader:$VIEWER_NODE_TOKEN"
"$BIN" ae add DEMO_CT --host 127.0.0.1 >/dev/null
"$BIN" ae add PACS --role pacs --host 127.0.0.1 --port "$RESULTS_TO" >/dev/null
"$BIN" serve 2> "$RUN/node.log" &
PIDS+=($!)
for _ in $(seq 300); do grep -q 'listening port=' "$RUN/node.log" && break; sleep 0.1; done
grep -q 'listening port=' "$RUN/node.log" || { echo "the node did not start; log:" >&2; tail -20 "$RUN/node.log" >&2; exit 1; }
echo "== triage-node (debug build) on 127.0.0.1:$NODE_PORT (HTTP $NODE_HTTP), results to the $([ "$SOURCE" = node ] && echo "storescp sink on $SINK_PORT" || echo PACS)"

CR=.testdata/demo-cases/case000.dcm   # labels.csv: nodule 1
.venv/bin/python scripts/train-ct-demo-model.py series "$RUN/head-ct" 24 lesion >/dev/null
echo "== the originals to the PACS and to the node: the positive demo chest CR $CR and the 24-slice head CT"
storescu -aec PACS 127.0.0.1 "$PACS_DICOM" "$CR" "$RUN"/head-ct/slice*.dcm
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$NODE_PORT" "$CR" "$RUN"/head-ct/slice*.dcm
echo "== waiting for both studies' AI results to be delivered"
for _ in $(seq 600); do
  [ "$(grep -c 'AI report delivered' "$RUN/node.log" || true)" -ge 2 ] && break; sleep 0.5
done
grep 'AI report delivered' "$RUN/node.log" || { echo "no AI report delivered; node log:" >&2; tail -30 "$RUN/node.log" >&2; exit 1; }
study_of() { dcmdump -q "$1" | sed -n 's/^(0020,000d) UI \[\(.*\)\].*/\1/p'; }
CR_STUDY=$(study_of "$CR"); CT_STUDY=$(study_of "$RUN/head-ct/slice000.dcm")
show_series() {  # $1 = label, $2 = DICOMweb root, $3.. curl options
  local label=$1 root=$2; shift 2
  for s in "$CR_STUDY" "$CT_STUDY"; do
    echo "-- study $s, $label (series: modality, description, instances):"
    curl -sf "$@" "$root/studies/$s/series" | .venv/bin/python -c '
import json, sys
body = sys.stdin.read()
for s in (json.loads(body) if body.strip() else []):
    v = lambda t: (s.get(t, {}).get("Value") or [""])[0]
    print("  ", v("00080060"), v("0008103E"), v("00201209"), "instances")'
  done
}
show_series "in the PACS (Orthanc)" "http://127.0.0.1:$PACS_HTTP/dicom-web"
VIEWER=http://127.0.0.1:$VIEWER_PORT
if [ "$SOURCE" = node ]; then
  show_series "in the node (QIDO-RS, reader token)" "http://127.0.0.1:$NODE_HTTP/dicomweb" -H "Authorization: Bearer $VIEWER_NODE_TOKEN"
  VIEWER_NODE_TOKEN=$VIEWER_NODE_TOKEN .venv/bin/python scripts/viewer_drive.py serve-node "$VIEWER_PORT" "$OHIF/dist" "$PACS_HTTP" "$NODE_HTTP" 2> "$RUN/viewer-http.log" &
  PIDS+=($!)
  ROOT_PATH=dicomweb
else
  .venv/bin/python scripts/viewer_drive.py serve "$VIEWER_PORT" "$OHIF/dist" "$PACS_HTTP" 2> "$RUN/viewer-http.log" &
  PIDS+=($!)
  ROOT_PATH=dicom-web
fi
for _ in $(seq 100); do curl -sf "$VIEWER/app-config.js" >/dev/null && break; sleep 0.1; done
[ "$SOURCE" = node ] && show_series "through the viewer's merged /dicomweb (no token)" "$VIEWER/dicomweb"
echo "== OHIF $OHIF_VERSION at $VIEWER/ (DICOMweb at $VIEWER/$ROOT_PATH)"
echo "   $VIEWER/viewer?StudyInstanceUIDs=$CR_STUDY"
echo "   $VIEWER/viewer?StudyInstanceUIDs=$CT_STUDY"
if [ -n "${KEEP:-}" ]; then
  echo "KEEP: running until killed"; sleep infinity & PIDS+=($!); wait "${PIDS[-1]}"
fi
if [ "$SOURCE" = pacs ]; then
  echo "== DIAGNOSTIC copies of the head CT's map and SR in the PACS (see scripts/viewer_drive.py diagnose)"
  .venv/bin/python scripts/viewer_drive.py diagnose "$PACS_HTTP" "$CT_STUDY"
fi
echo "== OHIF in headless Chromium: screenshots to $OUT"
.venv/bin/python scripts/viewer_drive.py shoot "$VIEWER" "$OUT" "chest-cr=$CR_STUDY" "head-ct=$CT_STUDY:24"
