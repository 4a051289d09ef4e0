"""STOW-RS client side of the tests (tests/it/dicomweb_stow.rs) and of scripts/bench-stow.sh.

  make OUT N SOURCE        N CT slices of one new study made from SOURCE (a CT Part 10 file):
                           new UIDs, slice positions, a planted patient (STOW^SECRET / STOWPID77).
                           Prints the original Study Instance UID.
  store URL TOKEN FILE...  dicomweb-client stores the files in one request (POST URL/studies);
                           prints the response data set as DICOM JSON, or `HTTP <status> <body>`.
  post URL TOKEN DIR       every file of DIR in one request, streamed (chunked, a file at a time:
                           what a gateway would send); prints `HTTP <status>` and the counts.
"""
import json
import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def make(out, n, source):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for i in range(int(n)):
        ds = pydicom.dcmread(source)
        ds.PatientName = "STOW^SECRET"
        ds.PatientID = "STOWPID77"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.save_as(out / f"slice{i:04}.dcm", enforce_file_format=True)
    print(study)


def store(url, token, files):
    import requests
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    datasets = [pydicom.dcmread(f) for f in files]
    try:
        result = client.store_instances(datasets)
    except requests.HTTPError as e:
        print(f"HTTP {e.response.status_code} {e.response.text}")
        return
    print(json.dumps(result.to_json_dict()))


def post(url, token, folder):
    import uuid

    import requests

    boundary = uuid.uuid4().hex
    files = sorted(Path(folder).iterdir())

    def body():
        for f in files:
            yield f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield f.read_bytes()
        yield f"\r\n--{boundary}--\r\n".encode()

    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    rsp = requests.post(f"{url}/studies", data=body(), headers={"Content-Type": ct, "Authorization": f"Bearer {token}"}, timeout=600)
    rsp_json = rsp.json() if rsp.headers.get("Content-Type") == "application/dicom+json" else {}
    stored = len(rsp_json.get("00081199", {}).get("Value", []))
    failed = len(rsp_json.get("00081198", {}).get("Value", []))
    print(f"HTTP {rsp.status_code} stored={stored} failed={failed}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(*args)
    elif cmd == "post":
        post(*args)
    elif cmd == "store":
        store(args[0], args[1], args[2:])
    else:
        sys.exit(f"unknown command {cmd}")
