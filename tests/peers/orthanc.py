"""Talk to the Orthanc the tests start (its REST API on loopback), as a PACS user would see it.

    python orthanc.py ready HTTP_PORT                 exit 0 once the REST API answers
    python orthanc.py study HTTP_PORT STUDY_UID DIR   download every instance of that study
                                                      into DIR; print one JSON line per instance
    python orthanc.py query HTTP_PORT MODALITY LEVEL JSON
                                                      C-FIND through Orthanc to a DICOM modality
                                                      (its REST /modalities/{id}/query): one JSON
                                                      line per answer, then {"query": ID}
    python orthanc.py retrieve HTTP_PORT QUERY_ID     C-MOVE every answer of that query to
                                                      Orthanc itself; then one JSON line per
                                                      instance Orthanc holds
"""
import json
import os
import sys
import urllib.error
import urllib.request


def get(port, path, data=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def main():
    cmd, port = sys.argv[1], sys.argv[2]
    if cmd == "ready":
        try:
            get(port, "/system")
        except urllib.error.HTTPError as e:
            # Up, and asking for credentials (AuthenticationEnabled).
            if e.code != 401:
                raise
        return
    if cmd == "study":
        uid, out = sys.argv[3], sys.argv[4]
        os.makedirs(out, exist_ok=True)
        query = json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": uid}}).encode()
        for study in json.loads(get(port, "/tools/find", query)):
            for inst in json.loads(get(port, f"/studies/{study}/instances")):
                path = os.path.join(out, inst["ID"] + ".dcm")
                with open(path, "wb") as f:
                    f.write(get(port, f"/instances/{inst['ID']}/file"))
                tags = json.loads(get(port, f"/instances/{inst['ID']}/simplified-tags"))
                print(json.dumps({"file": path, "sop_class": tags.get("SOPClassUID"), "series": tags.get("SeriesInstanceUID"),
                                  "modality": tags.get("Modality"), "patient_id": tags.get("PatientID")}))
        return
    if cmd == "query":
        modality, level, query = sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
        body = json.dumps({"Level": level, "Query": query}).encode()
        q = json.loads(get(port, f"/modalities/{modality}/query", body))
        for i in json.loads(get(port, f"/queries/{q['ID']}/answers")):
            print(json.dumps(json.loads(get(port, f"/queries/{q['ID']}/answers/{i}/content?simplify"))))
        print(json.dumps({"query": q["ID"]}))
        return
    if cmd == "retrieve":
        qid = sys.argv[3]
        # The Move Destination: Orthanc's own AE title (ORTHANC in the tests, PACS in the demo).
        target = sys.argv[4] if len(sys.argv) > 4 else "ORTHANC"
        get(port, f"/queries/{qid}/retrieve", json.dumps({"TargetAet": target, "Synchronous": True}).encode())
        for inst in json.loads(get(port, "/instances")):
            tags = json.loads(get(port, f"/instances/{inst}/simplified-tags"))
            print(json.dumps({k: tags.get(k) for k in ("SOPInstanceUID", "SOPClassUID", "PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber")}))
        return
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
