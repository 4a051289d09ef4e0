"""A UPS Push SCP (pynetdicom) standing in for the site's worklist manager.

    python ups_scp.py AE PORT OUT

Every N-CREATE of Unified Procedure Step - Push is appended to OUT as one JSON line (the
Affected SOP Instance UID, the calling AE, the attribute list as DICOM JSON), flushed and synced
*before* the response goes out, so a line means created. A workitem UID created before is
answered 0x0111 (Duplicate SOP Instance) and not written again. Prints "listening" once bound.
"""
import json
import os
import sys
import threading

from pynetdicom import AE, evt
from pynetdicom.sop_class import UnifiedProcedureStepPush, Verification

me, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
created = set()


def on_create(event):
    uid = str(event.request.AffectedSOPInstanceUID)
    if uid in created:
        return 0x0111, None
    ds = event.attribute_list
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"uid": uid, "calling": event.assoc.requestor.ae_title, "dataset": ds.to_json_dict()}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    created.add(uid)
    return 0x0000, ds


ae = AE(ae_title=me)
ae.add_supported_context(UnifiedProcedureStepPush)
ae.add_supported_context(Verification)
server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_CREATE, on_create)])
print("listening", flush=True)
try:
    threading.Event().wait()
except KeyboardInterrupt:
    server.shutdown()
