#!/usr/bin/env bash
# The README's run command: sets up everything on a fresh machine, starts a local PACS (Orthanc,
# on loopback with its own config in ./demo-data/pacs) and triage-node on the embedded default
# (SQLite in ./demo-data), pushes real sample studies (a head CT and an adult chest CR from
# pydicom-data, and four demo chest cases made from that CR, two with a synthetic nodule) with
# DCMTK storescu, and a 24-slice head CT series (a synthetic lesion on a real slice) from a
# modality that sends MPPS (pynetdicom), to both (the PACS holds the originals, as it would from the modality), waits
# for the studies to complete and be triaged by the shipped demonstration models
# (models/demo-nodule, models/demo-ct-hyperdense: NOT clinically validated), and for the AI results (a TID 1500 SR per
# chest study, a heatmap Secondary Capture per positive finding) to arrive in the PACS inside
# the original studies, with the PACS's Storage Commitment for each. Prints the results, one SR
# as the PACS holds it, the heatmaps as PNG, a summary, and stops both cleanly. Then models
# of every kind on another node (scripts/demo-models.sh: models/more's volume classifier,
# segmenter and ONNX detector; a SEG and a detection region arriving in a PACS), and two nodes
# as one site (scripts/demo-cluster.sh: PostgreSQL and a SeaweedFS S3 bucket shared, a study split
# across them, one report; skipped without PostgreSQL at 127.0.0.1:5432).
#
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PACS_DICOM=$(free_port); PACS_HTTP=$(free_port)
mkdir -p "$DEMO/pacs"
cat > "$DEMO/pacs/orthanc.json" <<JSON
{ "Name": "demo-pacs", "StorageDirectory": "$DEMO/pacs/db", "IndexDirectory": "$DEMO/pacs/db",
  "DicomAet": "PACS", "DicomPort": $PACS_DICOM, "HttpPort": $PACS_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "Plugins": [],
  "DicomModalities": { "triage": [ "TRIAGE", "127.0.0.1", $TRIAGE__DICOM__PORT ] } }
JSON
Orthanc "$DEMO/pacs/orthanc.json" 2> "$DEMO/pacs/orthanc.log" &
PACS=$!
for _ in $(seq 100); do .venv/bin/python tests/peers/orthanc.py ready "$PACS_HTTP" 2>/dev/null && break; sleep 0.2; done
echo "== local PACS: Orthanc, AE PACS on 127.0.0.1:$PACS_DICOM (REST on $PACS_HTTP)"
export TRIAGE__RESULTS__DESTINATIONS=PACS TRIAGE__DELIVERY__STORAGE_COMMITMENT=true

# The RIS: a real HL7 v2 MLLP receiver (PyPI hl7) that records each ORU^R01 it accepts.
RIS_PORT=$(free_port)
.venv/bin/python tests/peers/mllp_receiver.py --port "$RIS_PORT" --out "$DEMO/ris.jsonl" > "$DEMO/ris.log" 2>&1 &
RIS=$!
export TRIAGE__HL7__ENABLED=true TRIAGE__HL7__HOST=127.0.0.1 TRIAGE__HL7__PORT=$RIS_PORT TRIAGE__HL7__RECEIVING_APPLICATION=RIS
echo "== RIS: HL7 MLLP receiver on 127.0.0.1:$RIS_PORT"
# The on-call team's notification service: a real HTTP receiver that records each POST; the node
# notifies it of every study that becomes URGENT (de-identified, through the outbox).
HOOK_PORT=$(free_port)
.venv/bin/python tests/peers/webhook_receiver.py --port "$HOOK_PORT" --out "$DEMO/oncall.jsonl" > "$DEMO/oncall.log" 2>&1 &
HOOK=$!
echo "== on-call notifications: a webhook receiver on 127.0.0.1:$HOOK_PORT (rule \"oncall\": URGENT studies)"
# The backup on-call's mailbox: a real SMTP server (aiosmtpd) on loopback; the "oncall" rule
# escalates to it when nobody acknowledges within 8 s.
MAIL_DIR=$DEMO/mail; mkdir -p "$MAIL_DIR"
.venv/bin/python tests/peers/smtp_receiver.py --host 127.0.0.1 --port 0 --out "$MAIL_DIR" > "$DEMO/smtp.log" 2>&1 &
MAIL=$!
for _ in $(seq 100); do grep -q 'ready port=' "$DEMO/smtp.log" && break; sleep 0.1; done
SMTP_PORT=$(sed -n 's/^ready port=//p' "$DEMO/smtp.log")
echo "== the backup on-call's mailbox: an SMTP server on 127.0.0.1:$SMTP_PORT (rule \"backup\", reached by escalation)"
# The site's worklist manager: a UPS Push SCP (pynetdicom); an urgent study becomes a workitem
# with priority HIGH there, and the RIS gets an OMI^O23 raising the order to STAT.
UPS_PORT=$(free_port)
.venv/bin/python tests/peers/ups_scp.py WORKLIST "$UPS_PORT" "$DEMO/ups.jsonl" > "$DEMO/ups.log" 2>&1 &
UPS=$!
export TRIAGE__HL7__ORDER_UPDATE=omi
echo "== the worklist manager: a UPS Push SCP (WORKLIST) on 127.0.0.1:$UPS_PORT"
# The worklist page and API: a reader's and an admin's token (demo only; a site uses
# `triage-node token add`, which keeps only their hashes).
HTTP_PORT=${HTTP_PORT:-$(free_port)}
READER_TOKEN=demo-reader-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
ADMIN_TOKEN=demo-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
GATEWAY_TOKEN=demo-gateway-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export TRIAGE__HTTP__PORT=$HTTP_PORT TRIAGE_HTTP_TOKENS="radiologist:reader:$READER_TOKEN,radiology-it:admin:$ADMIN_TOKEN,CT_GATEWAY:modality:$GATEWAY_TOKEN"
# Score drift against the models' validation scores (reference.json) from 4 studies on (a site
# keeps the default 50 of the newest 200).
export TRIAGE__DRIFT__MIN_STUDIES=4

# DICOM over TLS (BCP 195) on a port of its own, beside the plain one: a throwaway CA signs the
# node's certificate and a modality's; the TLS port accepts only certificates that CA signed.
PKI=$DEMO/pki; mkdir -p "$PKI"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 2 -subj "/CN=demo site CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$PKI/leaf.ext"
for leaf in node modality; do
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$leaf.key" -out "$PKI/$leaf.csr" -subj "/CN=demo-$leaf" 2>/dev/null
  openssl x509 -req -in "$PKI/$leaf.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -out "$PKI/$leaf.crt" -days 2 -extfile "$PKI/leaf.ext" 2>/dev/null
done
TLS_PORT=${TLS_PORT:-$(free_port)}
export TRIAGE__DICOM__TLS__ENABLED=true TRIAGE__DICOM__TLS__PORT=$TLS_PORT TRIAGE__DICOM__TLS__CERTIFICATE=$PKI/node.crt \
  TRIAGE__DICOM__TLS__PRIVATE_KEY=$PKI/node.key TRIAGE__DICOM__TLS__CLIENT_CA=$PKI/ca.crt

"$BIN" ae add DEMO_CT --host 127.0.0.1
# TLS only, and bound to its certificate: another certificate of the same CA cannot use this title.
"$BIN" ae add DEMO_SECURE_CR --host 127.0.0.1 --tls --tls-identity demo-modality
"$BIN" ae add PACS --role pacs --host 127.0.0.1 --port "$PACS_DICOM"
"$BIN" ae add WORKLIST --role pacs --host 127.0.0.1 --port "$UPS_PORT"
"$BIN" ae list
cat > "$DEMO/notify.toml" <<EOF
[results]
ups = ["WORKLIST"]
[notify]
enabled = true
link_base = "http://127.0.0.1:$HTTP_PORT/"
[[notify.rules]]
name = "oncall"
url = "http://127.0.0.1:$HOOK_PORT/hooks/oncall"
priorities = ["urgent"]
escalate_after = "8s"
escalate_to = "backup"
[[notify.rules]]
name = "backup"
email = ["neuro-backup@hospital.example"]
priorities = []
[notify.smtp]
host = "127.0.0.1"
port = $SMTP_PORT
security = "plain"
from = "triage-node@hospital.example"
EOF
"$BIN" --config "$DEMO/notify.toml" serve 2> "$DEMO/node.log" &
NODE=$!
trap 'kill -TERM $NODE $PACS $RIS $HOOK $MAIL $UPS 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'listening port=' "$DEMO/node.log" && break; sleep 0.1; done
grep 'listening port=' "$DEMO/node.log"

export TCP_NODELAY=1
echo "== C-ECHO"
echoscu -v -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT"
echo "== DICOM over TLS (port $TLS_PORT, BCP 195): DEMO_SECURE_CR is registered TLS only"
echo "-- on the plain port it is refused:"
echoscu -aet DEMO_SECURE_CR -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" 2>&1 | grep -E 'Rejected|Reason' | head -2 || true
echo "-- over TLS with the certificate the site CA signed, a C-ECHO and a C-STORE (the demo CR case 4):"
echoscu -aet DEMO_SECURE_CR -aec TRIAGE +tls "$PKI/modality.key" "$PKI/modality.crt" +cf "$PKI/ca.crt" 127.0.0.1 "$TLS_PORT" && echo "C-ECHO over TLS: success"
storescu -aet DEMO_SECURE_CR -aec TRIAGE +tls "$PKI/modality.key" "$PKI/modality.crt" +cf "$PKI/ca.crt" 127.0.0.1 "$TLS_PORT" .testdata/demo-cases/case004.dcm && echo "C-STORE over TLS: success"
echo "-- another certificate the same CA signed (CN demo-node) calling as DEMO_SECURE_CR is refused:"
echoscu -aet DEMO_SECURE_CR -aec TRIAGE +tls "$PKI/node.key" "$PKI/node.crt" +cf "$PKI/ca.crt" 127.0.0.1 "$TLS_PORT" 2>&1 | grep -E 'Rejected|Reason' | head -2 || true
echo "-- anonymous TLS (no client certificate) is refused at the handshake:"
echoscu -aet DEMO_SECURE_CR -aec TRIAGE +tla +cf "$PKI/ca.crt" 127.0.0.1 "$TLS_PORT" 2>&1 | tail -1 || true
echo "== C-STORE: a head CT slice (JPEG 2000 lossless) and an adult chest CR (explicit VR), then 9 more CT slices"
storescu -R -xv -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/ts/ct_j2k_lossless.dcm .testdata/ts/cr_explicit_le.dcm
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/series/ct_0[1-9].dcm
echo "== C-STORE: four demo chest cases (labels: $(sed -n '2,5p' .testdata/demo-cases/labels.csv | tr '\n' ' '))"
storescu -aet DEMO_CT -aec TRIAGE 127.0.0.1 "$TRIAGE__DICOM__PORT" .testdata/demo-cases/case00[0-3].dcm
echo "== STOW-RS: a modality gateway stores demo case 5 over HTTP (PyPI dicomweb-client, modality token)"
.venv/bin/python - "http://127.0.0.1:$HTTP_PORT/dicomweb" "$GATEWAY_TOKEN" .testdata/demo-cases/case005.dcm <<'PY'
import json, sys, pydicom
from dicomweb_client.api import DICOMwebClient
client = DICOMwebClient(url=sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
answer = client.store_instances([pydicom.dcmread(sys.argv[3])])
print("POST /dicomweb/studies (multipart/related; type=\"application/dicom\") ->", json.dumps(answer.to_json_dict()))
print("stored:", len(answer.get("ReferencedSOPSequence", [])), "failed:", len(answer.get("FailedSOPSequence", [])))
PY
echo "== a head CT scanner that speaks MPPS (pynetdicom): N-CREATE IN PROGRESS, 24 axial slices (a real head CT"
echo "   slice from pydicom-data, a synthetic hyperdense lesion on some), N-SET COMPLETED listing them"
.venv/bin/python scripts/train-ct-demo-model.py series "$DEMO/head-ct" 24 lesion
.venv/bin/python tests/peers/pynetdicom_peer.py --port "$TRIAGE__DICOM__PORT" --aet DEMO_CT mpps --store "$DEMO"/head-ct/slice*.dcm | grep -v '^STORED 0x0000' || true
echo "-- the study was ready without the quiet period:"; grep 'study ready' "$DEMO/node.log" | grep 'procedure step' | head -1
echo "== the same originals to the PACS (as the modality would have sent them)"
storescu -aec PACS 127.0.0.1 "$PACS_DICOM" .testdata/ts/cr_explicit_le.dcm .testdata/demo-cases/case00[0-5].dcm "$DEMO"/head-ct/slice*.dcm
echo "== waiting for the 3 s quiet period that completes each study, its triage, and the results' delivery"
# Seven chest studies (the CR, four demo cases, the one sent over TLS and the one sent by STOW-RS)
# and the head CT get a report each.
for _ in $(seq 300); do
  [ "$(grep -c 'AI report delivered' "$DEMO/node.log" || true)" -ge 8 ] && break; sleep 0.2
done
echo "== waiting for the PACS's storage commitment reports"
for _ in $(seq 100); do
  [ "$(grep -c 'storage commitment: the PACS' "$DEMO/node.log" || true)" -ge "$(grep -c 'storage commitment requested' "$DEMO/node.log" || true)" ] && break; sleep 0.2
done
echo "== Query/Retrieve: a viewer asks the node for the AI results of demo patient DEMO000 (DCMTK findscu, Study Root)"
"$BIN" ae add VIEWER --role pacs --host 127.0.0.1 --port "$(free_port)"
findscu -v -S -aet VIEWER -aec TRIAGE -k QueryRetrieveLevel=STUDY -k PatientID=DEMO000 -k PatientName -k StudyInstanceUID \
  -k AccessionNumber -k ModalitiesInStudy -k NumberOfStudyRelatedInstances 127.0.0.1 "$TRIAGE__DICOM__PORT" 2>&1 | grep -E '^I: \(|Find Response|^I: Received' || true
echo "== the PACS (Orthanc REST /modalities/triage/query) finds the positive demo patients' results and pulls them by C-MOVE"
.venv/bin/python tests/peers/orthanc.py query "$PACS_HTTP" triage Study '{"PatientID":"DEMO00*","AccessionNumber":"","ModalitiesInStudy":"OT","NumberOfStudyRelatedInstances":""}' | tee "$DEMO/qr.json"
QID=$(sed -n 's/.*"query": "\([^"]*\)".*/\1/p' "$DEMO/qr.json")
.venv/bin/python tests/peers/orthanc.py retrieve "$PACS_HTTP" "$QID" PACS | wc -l | xargs echo "instances the PACS holds after the C-MOVE:"
echo "== the node's log of that: one audit entry per query and per retrieve"
"$BIN" audit list | grep -E '"(query|retrieve)"|query|retrieve' | tail -4 || true
API=http://127.0.0.1:$HTTP_PORT
echo "== DICOMweb: a web viewer searches the node's AI results (QIDO-RS, reader token) and loads the report's metadata (WADO-RS)"
curl -sf -H "Authorization: Bearer $READER_TOKEN" "$API/dicomweb/studies?PatientID=DEMO000&includefield=ModalitiesInStudy" > "$DEMO/qido.json"
curl -sf -H "Authorization: Bearer $READER_TOKEN" -H 'Accept: application/dicom+json' "$API/dicomweb/instances?PatientID=DEMO000&Modality=SR" > "$DEMO/qido-sr.json"
.venv/bin/python - "$DEMO/qido.json" "$DEMO/qido-sr.json" <<'PY' > "$DEMO/wado-path"
import json, sys
studies, srs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
v = lambda d, tag: (d.get(tag, {}).get("Value") or [""])[0]
print("GET /dicomweb/studies?PatientID=DEMO000&includefield=ModalitiesInStudy ->", json.dumps(studies[:1]), file=sys.stderr)
for s in studies:
    print("QIDO-RS study: patient %s, modalities %s, %s instances" % (v(s, "00100020"), "/".join(s.get("00080061", {}).get("Value", [])), v(s, "00201208")), file=sys.stderr)
sr = srs[0]
print("/dicomweb/studies/%s/series/%s/instances/%s/metadata" % (v(sr, "0020000D"), v(sr, "0020000E"), v(sr, "00080018")))
PY
curl -sf -H "Authorization: Bearer $READER_TOKEN" "$API$(cat "$DEMO/wado-path")" | .venv/bin/python -c '
import json, sys
m = json.load(sys.stdin)[0]
v = lambda tag: (m.get(tag, {}).get("Value") or [""])[0]
print("WADO-RS metadata of the SR:", v("00080060"), "|", v("0008103E"), "| patient", v("00100020"), "| completion", v("0040A491"))'
echo "-- without a token: HTTP $(curl -s -o /dev/null -w '%{http_code}' "$API/dicomweb/studies")"
echo "== the worklist API (GET $API/api/worklist, reader token): urgent first, patients named for the signed-in reader"
curl -sf -H "Authorization: Bearer $READER_TOKEN" "$API/api/worklist?limit=10" > "$DEMO/worklist.json"
.venv/bin/python - "$DEMO/worklist.json" <<'PY'
import json, sys
for i in json.load(open(sys.argv[1]))["items"]:
    p = i.get("patient") or {}
    f = ", ".join("%s %.2f" % (x["label"], x["probability"]) for x in i["findings"] if x["positive"]) or "-"
    print("%-15s study %-3s %-20s %-12s %s" % (i["priority"], i["study_id"], p.get("name"), p.get("accession"), f))
PY
echo "-- without a token: HTTP $(curl -s -o /dev/null -w '%{http_code}' "$API/api/worklist")"
echo "== the on-call webhook: one notification per study that became URGENT (de-identified; the head CT's in full)"
for _ in $(seq 50); do [ "$(wc -l < "$DEMO/oncall.jsonl" 2>/dev/null || echo 0)" -ge 2 ] && break; sleep 0.2; done
.venv/bin/python - "$DEMO/oncall.jsonl" "$DEMO/ct-ack-link" <<'PY'
import json, sys
posts = [json.loads(l) for l in open(sys.argv[1])]
for p in posts:
    b = json.loads(p["body"])
    print(p["status"], p["headers"].get("idempotency-key"), b["priority"], "study", b["node_study_id"], ", ".join("%s %.2f" % (f["label"], f["probability"]) for f in b["findings"]))
ct = [json.loads(p["body"]) for p in posts if any(f["model"].startswith("demo-ct") for f in json.loads(p["body"])["findings"])]
if ct:
    print(json.dumps(ct[0], indent=2))
    open(sys.argv[2], "w").write(ct[0]["acknowledge"])
PY
if [ -s "$DEMO/ct-ack-link" ]; then
  LINK=$(cat "$DEMO/ct-ack-link")
  echo "== the neuro on-call opens the head CT's acknowledgement link (a GET changes nothing) and presses its button"
  curl -s "$LINK" | grep -o '<h1>[^<]*</h1>' | sed 's/<[^>]*>//g; s/^/page: /'
  curl -s -X POST "$LINK" | grep -o '<h1>[^<]*</h1>\|Recorded [^<]*' | sed 's/<[^>]*>//g'
fi
echo "== nobody acknowledged the chest case's notification within 8 s: it escalates to the backup, by e-mail"
for _ in $(seq 100); do ls "$MAIL_DIR"/*.json >/dev/null 2>&1 && break; sleep 0.2; done
.venv/bin/python - "$MAIL_DIR" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    m = json.load(open(f))
    print("To:", ", ".join(m["rcpt_tos"]), "| Subject:", m["headers"]["subject"], "| Message-ID:", m["headers"]["message_id"])
    print(m["text"].replace("\r\n", "\n"))
PY
echo "-- the head CT (acknowledged) escalated to nobody; the acknowledgement is audited and on the worklist:"
"$BIN" audit list | grep 'acknowledge' | tail -2 || true
curl -s -H "Authorization: Bearer $READER_TOKEN" "$API/api/worklist" | .venv/bin/python -c '
import json, sys
for i in json.load(sys.stdin)["items"]:
    n = i.get("notification")
    if n:
        ack = "acknowledged by %s after %.1f s" % (n["acknowledged_by"], n["time_to_acknowledgement_ms"] / 1000) if n["acknowledged_at_ms"] else "not acknowledged"
        print("study", i["study_id"], i["priority"], "on-call told after %.1f s;" % (n["time_to_notification_ms"] / 1000), ack)'
echo "== the worklist manager received a UPS workitem per urgent study (re-identified; priority HIGH)"
for _ in $(seq 50); do [ -s "$DEMO/ups.jsonl" ] && break; sleep 0.2; done
.venv/bin/python - "$DEMO/ups.jsonl" <<'PY'
import json, sys
from pydicom import Dataset
for line in open(sys.argv[1]):
    w = json.loads(line)
    ds = Dataset.from_json(w["dataset"])
    print("workitem", w["uid"], "from", w["calling"])
    for kw in ["PatientName", "PatientID", "StudyInstanceUID", "ProcedureStepState", "ScheduledProcedureStepPriority", "ProcedureStepLabel", "WorklistLabel", "ScheduledProcedureStepStartDateTime"]:
        print("  %-38s %s" % (kw, ds.get(kw, "")))
    for item in ds.get("InputInformationSequence", []):
        print("  input: study", item.get("StudyInstanceUID", ""), "|", len(item.get("ReferencedSOPSequence", [])), "instance(s)")
PY
echo "== an admin retracts the top study's AI result (IHE IOCM): a rejection note naming its objects goes"
echo "   to the PACS, the RIS gets a correction, the study leaves the worklist (kept, with its history)"
RETRACT_ID=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["items"][0]["study_id"])' "$DEMO/worklist.json")
"$BIN" results retract "$RETRACT_ID" --reason "demo: withdrawn by the site's AI lead"
for _ in $(seq 100); do grep -q 'delivered.*kind=kos' "$DEMO/node.log" && break; sleep 0.2; done
grep 'delivered.*kind=kos' "$DEMO/node.log" | head -1 || echo "(the rejection note was not delivered yet)"
echo "== readiness (without a token: ready or not; with the admin token: the details) and a few Prometheus metrics"
curl -s "$API/readyz"; echo
curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$API/readyz"; echo
curl -s "$API/metrics" | grep -E '^triage_(worklist_studies|instances_received_total|cstore_responses_total|end_to_end_seconds_count|outbox_items|model_score_psi)' || true
echo "== score drift (GET /api/drift, admin): the demo cases, made at 512 rows, against demo-nodule's validation images"
curl -sf -H "Authorization: Bearer $ADMIN_TOKEN" "$API/api/drift" | .venv/bin/python -c '
import json, sys
for d in json.load(sys.stdin):
    print("%-20s %-8s %-18s %-16s PSI %s over %d studies" % (d["model"], d["model_version"], d["label"], d["state"], d["psi"], d["live_studies"]))'
echo "== waiting for the RIS to accept an ORU^R01 per triaged chest study"
for _ in $(seq 100); do [ "$(wc -l < "$DEMO/ris.jsonl" 2>/dev/null || echo 0)" -ge 6 ] && break; sleep 0.2; done
echo "== the messages the RIS accepted: an ORU^R01 per triaged study, an OMI^O23 raising each urgent order to STAT"
echo "   (the first ORU and the first OMI in full)"
.venv/bin/python - "$DEMO/ris.jsonl" <<'PY'
import json, sys
msgs = [json.loads(l) for l in open(sys.argv[1])]
for m in msgs:
    segs = m["message"].split("\r")
    msh = segs[0].split("|")
    pid = [x for x in segs if x.startswith("PID|")][0].split("|")
    tq1 = [x for x in segs if x.startswith("TQ1|")]
    print(m["control_id"], msh[8], m["code"], "patient", pid[3], pid[5], "priority", tq1[0].split("|")[9] if tq1 else "-")
print()
for kind in ("ORU", "OMI"):
    first = [m for m in msgs if m["message"].split("\r")[0].split("|")[8].startswith(kind)]
    if first:
        print(first[0]["message"].replace("\r", "\n"))
PY
kill -TERM $NODE; wait $NODE || true
echo "== node log"
cat "$DEMO/node.log"
echo "== study results (demo-nodule takes chest radiographs, demo-ct-hyperdense axial head CT; the CT slices sent"
echo "   first name no body part, so no model takes them: not_applicable)"
"$BIN" results
echo "== the reading worklist: urgent first, then positive by score, failed / not analysed, negative, not applicable"
"$BIN" worklist
echo "== the same demo cases through \`triage-node infer\`, with heatmaps in $DEMO/heatmaps"
"$BIN" infer --heatmaps "$DEMO/heatmaps" .testdata/demo-cases/case00[0-3].dcm | cut -c1-200
ls "$DEMO/heatmaps"
echo "== what the PACS holds for the first demo case's study (original image + AI objects)"
CASE_STUDY=$(dcmdump -q .testdata/demo-cases/case000.dcm | sed -n 's/^(0020,000d) UI \[\(.*\)\].*/\1/p')
.venv/bin/python tests/peers/orthanc.py study "$PACS_HTTP" "$CASE_STUDY" "$DEMO/from-pacs" | tee "$DEMO/from-pacs.json"
SR=$(grep '"modality": "SR"' "$DEMO/from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
SC=$(grep '"modality": "OT"' "$DEMO/from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
PM=$(grep '"sop_class": "1.2.840.10008.5.1.4.1.1.30"' "$DEMO/from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
echo "== the AI report as the PACS holds it (DCMTK dsrdump; re-identified: the original patient and study)"
dsrdump -Ee "$SR" | head -80
if [ -n "$SC" ]; then
  dcmj2pnm +on "$SC" "$DEMO/heatmap-from-pacs.png"
  echo "== the heatmap Secondary Capture from the PACS, as PNG: $DEMO/heatmap-from-pacs.png"
fi
if [ -n "$PM" ]; then
  echo "== the heatmap as a Parametric Map (IHE AIR), key attributes as the PACS holds it"
  dcmdump -q +P 0008,0016 +P 0008,0008 +P 0008,0060 +P 0020,0052 +P 0028,0010 +P 0028,0011 +P 0028,0100 \
    +P 0028,0002 +P 0028,0004 +P 0008,9205 +P 0070,0080 +P 0070,0084 +P 0040,9216 +P 0040,9211 +P 0028,3003 \
    +P 0008,1155 +P 0018,1020 +P 0008,1090 "$PM" | sort -u
fi
CT_STUDY=$(dcmdump -q "$DEMO/head-ct/slice000.dcm" | sed -n 's/^(0020,000d) UI \[\(.*\)\].*/\1/p')
.venv/bin/python tests/peers/orthanc.py study "$PACS_HTTP" "$CT_STUDY" "$DEMO/ct-from-pacs" > "$DEMO/ct-from-pacs.json"
CT_SR=$(grep '"modality": "SR"' "$DEMO/ct-from-pacs.json" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p' | head -1)
if [ -n "$CT_SR" ]; then
  echo "== the head CT's AI report as the PACS holds it (demo-ct-hyperdense: the key slice, the region, the"
  echo "   peak on the slice and in the patient)"
  dsrdump -Ee "$CT_SR" | sed -n '/"Imaging Measurements"/,$p' | head -90
fi
echo "== the objects pass dciodvfy (errors: none expected; on a Parametric Map dciodvfy reports two of its"
echo "   own, checking the FD Minimum/Maximum Stored Value Mapped as enumerated strings: not counted)"
for f in "$SR" $SC $PM $CT_SR; do
  n=$(dciodvfy "$f" 2>&1 | grep '^Error' | grep -vc 'Non-string attribute while verifying string enumerated value for attribute <M..imum Stored Value Mapp' || true)
  echo "-- $(dcmdump -q +P 0008,0016 "$f" | sed 's/.*=//;s/ *#.*//'): $n error(s)"
done
KOS=$(for f in "$DEMO"/outbox/results/*.dcm; do dcmdump -q +P 0008,0016 "$f" | grep -q KeyObjectSelection && echo "$f" && break; done)
if [ -n "$KOS" ]; then
  echo "== the rejection note the retraction sent (as queued: de-identified; the PACS got it re-identified)"
  dsrdump -Ee "$KOS" | sed -n '/^<CONTAINER/,$p' | head -20
  echo "-- dciodvfy: $(dciodvfy "$KOS" 2>&1 | grep -c '^Error' || true) error(s)"
fi
kill -TERM $PACS $RIS $HOOK $MAIL $UPS; wait $PACS 2>/dev/null || true
trap - EXIT
echo "== outbox"
"$BIN" outbox list
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
echo "== a signed checkpoint of the audit trail's head (keep it outside the database), verified"
CHECKPOINT=$("$BIN" audit head)
echo "$CHECKPOINT"
"$BIN" audit verify --checkpoint "$CHECKPOINT"
# Models of every kind: a volume classifier, a segmenter and an ONNX detector, their SEG and SR
# regions arriving in a PACS.
BIN="$BIN" scripts/demo-models.sh
# Several nodes, one site: two nodes sharing PostgreSQL and an S3 bucket (SeaweedFS).
BIN="$BIN" scripts/demo-cluster.sh
echo "== the worklist page"
if [ -t 0 ] && [ -z "${NO_KEEP:-}" ]; then
  export TRIAGE__HL7__ENABLED=false TRIAGE__RESULTS__DESTINATIONS=""
  "$BIN" serve 2>> "$DEMO/node.log" &
  NODE=$!
  trap 'kill -TERM $NODE 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -sf "$API/healthz" >/dev/null && break; sleep 0.1; done
  echo "open $API/ in a browser and sign in with the reader token:"
  echo "  $READER_TOKEN"
  echo "(admin token, for the AE page: $ADMIN_TOKEN). The node runs until Ctrl-C."
  wait $NODE || true
else
  echo "run the demo from a terminal to keep the node up; the page is served at $API/ (reader token: $READER_TOKEN)"
fi
