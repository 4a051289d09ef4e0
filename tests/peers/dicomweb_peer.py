"""DICOMweb client peer (PyPI dicomweb-client) for the QIDO-RS / WADO-RS tests.

    python dicomweb_peer.py BASE_URL TOKEN CALL ARGS_JSON [OUT_DIR]

CALL is a DICOMwebClient method (search_for_studies, search_for_series, search_for_instances,
retrieve_study, retrieve_series, retrieve_instance, retrieve_study_metadata,
retrieve_series_metadata, retrieve_instance_metadata, retrieve_instance_rendered), called with the
keyword arguments of ARGS_JSON. Prints one JSON line: {"result": ...} or {"status": HTTP status,
"text": body} when the server refused. Data sets come back as {keyword: value} of a few
attributes (and are written to OUT_DIR as <SOPInstanceUID>.dcm); rendered pictures as their
length, PNG signature and size.
"""
import json
import os
import struct
import sys

import requests
from dicomweb_client.api import DICOMwebClient


def summary(ds):
    out = {"SOPInstanceUID": str(ds.SOPInstanceUID), "SOPClassUID": str(ds.SOPClassUID)}
    for k in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber"):
        if k in ds:
            out[k] = str(ds.get(k))
    return out


def main():
    base, token, call, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    out_dir = sys.argv[5] if len(sys.argv) > 5 else None
    client = DICOMwebClient(url=base, headers={"Authorization": f"Bearer {token}"})
    try:
        result = getattr(client, call)(**args)
    except requests.exceptions.HTTPError as e:
        print(json.dumps({"status": e.response.status_code, "text": e.response.text}))
        return
    if call.endswith("_rendered"):
        png = bytes(result)
        ok = png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24]) if ok else (0, 0)
        print(json.dumps({"result": {"bytes": len(png), "png": ok, "width": width, "height": height}}))
        return
    if call.startswith("retrieve_") and not call.endswith("_metadata"):
        datasets = result if isinstance(result, list) else [result]
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for ds in datasets:
                ds.save_as(os.path.join(out_dir, f"{ds.SOPInstanceUID}.dcm"), enforce_file_format=True)
        print(json.dumps({"result": [summary(ds) for ds in datasets]}))
        return
    print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
