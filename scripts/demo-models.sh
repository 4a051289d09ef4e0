#!/usr/bin/env bash
# Models of every kind (called by scripts/demo.sh, or on its own after it): a node that runs the
# demonstration packages in models/more (NOT clinically validated) -- a 3D volume classifier and a
# 2D lesion segmenter on head CT (TorchScript), and a chest nodule detector shipped as ONNX --
# sends its results to a PACS (Orthanc), and shows what arrived there: the DICOM Segmentation
# (read back by highdicom, checked by dciodvfy), the detector's SR with its image region, and
# the volume model's SR.
#   scripts/demo-models.sh   (env: BIN=target/release/triage-node, built by scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/triage-node}
# The single-node demo's TRIAGE__* settings are not this node's.
unset $(env | grep -o '^TRIAGE__[A-Z0-9_]*' || true)
D=$PWD/demo-data/models
rm -rf "$D"; mkdir -p "$D/pacs"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null || true' EXIT
NODE_PORT=$(free_port); PACS_DICOM=$(free_port); PACS_HTTP=$(free_port)

echo "== models of every kind (models/more; demonstration, not clinically validated):"
for m in models/more/*/model.toml; do
  printf -- '-- %s: %s\n' "$(basename "$(dirname "$m")")" "$(sed -n 's/^kind = "\(.*\)".*/\1/p' "$m" | tr '\n' ' ')$(ls "$(dirname "$m")" | grep -o 'model\.\(pt\|onnx\)')"
done
cat > "$D/pacs/orthanc.json" <<JSON
{ "Name": "demo-pacs-models", "StorageDirectory": "$D/pacs/db", "IndexDirectory": "$D/pacs/db",
  "DicomAet": "PACS", "DicomPort": $PACS_DICOM, "HttpPort": $PACS_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "Plugins": [] }
JSON
Orthanc "$D/pacs/orthanc.json" 2> "$D/pacs/orthanc.log" & PIDS+=($!)
for _ in $(seq 100); do .venv/bin/python tests/peers/orthanc.py ready "$PACS_HTTP" 2>/dev/null && break; sleep 0.2; done

cat > "$D/node.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = $NODE_PORT
[storage]
data_dir = "$D/data"
[deid]
demo_keys = true
[ingest]
study_quiet_period = "3s"
[inference]
models_dir = "$PWD/models/more"
[results]
destinations = ["PACS"]
[http]
enabled = false
TOML
"$BIN" --config "$D/node.toml" ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_DICOM" >/dev/null
"$BIN" --config "$D/node.toml" ae add DEMO_MODALITY --host 127.0.0.1 >/dev/null
"$BIN" --config "$D/node.toml" serve 2> "$D/node.log" & PIDS+=($!)
for _ in $(seq 200); do grep -q 'listening port=' "$D/node.log" && break; sleep 0.1; done
grep 'model package loaded' "$D/node.log" | sed 's/.*model=\([^ ]*\) version=\([^ ]*\).*/-- loaded and warmed up: \1 \2/' || true

echo "== a head CT series with a synthetic hyperdense lesion (16 slices), and two demo chest cases (with and without a nodule)"
.venv/bin/python scripts/train-ct-demo-model.py series "$D/head-ct" 16 lesion
POS=$(awk -F, '$2 == 1 {print $1; exit}' .testdata/demo-cases/labels.csv)
NEG=$(awk -F, 'NR > 1 && $2 == 0 {print $1; exit}' .testdata/demo-cases/labels.csv)
storescu -aet DEMO_MODALITY -aec TRIAGE 127.0.0.1 "$NODE_PORT" "$D"/head-ct/slice*.dcm ".testdata/demo-cases/$POS" ".testdata/demo-cases/$NEG"
storescu -aec PACS 127.0.0.1 "$PACS_DICOM" "$D"/head-ct/slice*.dcm ".testdata/demo-cases/$POS" ".testdata/demo-cases/$NEG"
echo "== waiting for the three studies' triage and their results' delivery"
for _ in $(seq 600); do
  [ "$(grep -c 'AI report delivered' "$D/node.log" || true)" -ge 4 ] && [ "$("$BIN" --config "$D/node.toml" outbox list 2>/dev/null | grep -c pending || true)" -eq 0 ] && break
  sleep 0.2
done
sleep 1
echo "== the study results (one per study and model)"
"$BIN" --config "$D/node.toml" results

uid_of() { dcmdump -q +P 0020,000d "$1" | sed 's/.*\[\(.*\)\].*/\1/'; }
CT_STUDY=$(uid_of "$D/head-ct/slice000.dcm")
.venv/bin/python tests/peers/orthanc.py study "$PACS_HTTP" "$CT_STUDY" "$D/ct-from-pacs" > "$D/ct-from-pacs.json"
CT_IMAGE='"sop_class": "1.2.840.10008.5.1.4.1.1.2"'
echo "== what the PACS holds for the head CT's study: $(grep -c "$CT_IMAGE" "$D/ct-from-pacs.json") CT slices and $(grep -vc "$CT_IMAGE" "$D/ct-from-pacs.json" || true) AI objects (by SOP class)"
grep -v "$CT_IMAGE" "$D/ct-from-pacs.json" | sed 's/.*"sop_class": "\([^"]*\)".*"modality": "\([^"]*\)".*/\1 (modality \2)/' \
  | sed 's/^1.2.840.10008.5.1.4.1.1.66.4 /Segmentation /;s/^1.2.840.10008.5.1.4.1.1.88.34 /Comprehensive 3D SR /;s/^1.2.840.10008.5.1.4.1.1.7 /Secondary Capture (heatmap) /;s/^1.2.840.10008.5.1.4.1.1.30 /Parametric Map /' | sort | uniq -c
SEG=$(grep '"modality": "SEG"' "$D/ct-from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
if [ -n "$SEG" ]; then
  echo "== the DICOM Segmentation as the PACS holds it, read back by highdicom"
  .venv/bin/python - "$SEG" <<'PY'
import sys, highdicom as hd, numpy as np
seg = hd.seg.segread(sys.argv[1])
frames = np.asarray(seg.pixel_array)
print(f"SegmentationType {seg.SegmentationType}, {seg.number_of_frames} frame(s) on {len(seg.get_source_image_uids())} source slice(s)")
for item in seg.SegmentSequence:
    prop = item.SegmentedPropertyTypeCodeSequence[0]
    print(f"segment {item.SegmentNumber}: {item.SegmentLabel!r}, {prop.CodeMeaning!r} ({prop.CodingSchemeDesignator} {prop.CodeValue}), "
          f"algorithm {getattr(item, 'SegmentAlgorithmName', '-')!r}")
print(f"pixels above 0.5: {int((frames >= 0.5 * getattr(seg, 'MaximumFractionalValue', 1)).sum()) if seg.SegmentationType == 'FRACTIONAL' else int((frames > 0).sum())}")
PY
  echo "-- dciodvfy: $(dciodvfy "$SEG" 2>&1 | grep -c '^Error' || true) error(s)"
else
  echo "!! no Segmentation arrived in the PACS"
fi
for f in $(grep '"modality": "SR"' "$D/ct-from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p'); do
  echo "== a head CT AI report (SR) as the PACS holds it: $(dcmdump -q +P 0008,103e "$f" | sed 's/.*\[\(.*\)\].*/\1/')"
  dsrdump -Ee "$f" 2>/dev/null | grep -E '"Finding"|Probability|Volume|Area|SCOORD|Referenced Segment' | awk '!seen[$0]++' | head -12
  echo "-- dciodvfy: $(dciodvfy "$f" 2>&1 | grep -c '^Error' || true) error(s)"
done

CHEST_STUDY=$(uid_of ".testdata/demo-cases/$POS")
.venv/bin/python tests/peers/orthanc.py study "$PACS_HTTP" "$CHEST_STUDY" "$D/cr-from-pacs" > "$D/cr-from-pacs.json"
SR=$(grep '"modality": "SR"' "$D/cr-from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
if [ -n "$SR" ]; then
  echo "== the detector's report for the chest case with a nodule ($POS), as the PACS holds it: the box as an image region"
  dsrdump -Ee "$SR" 2>/dev/null | grep -E '"Finding"|Probability|SCOORD|Area' | awk '!seen[$0]++' | head -10
  echo "-- dciodvfy: $(dciodvfy "$SR" 2>&1 | grep -c '^Error' || true) error(s)"
else
  echo "!! no detector report arrived in the PACS for $POS"
fi
kill -TERM "${PIDS[@]}" 2>/dev/null || true
wait 2>/dev/null || true
trap - EXIT
