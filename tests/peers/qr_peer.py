"""A Query/Retrieve SCU and a picky Storage SCP, with pynetdicom, for the Q/R tests.

    python qr_peer.py variant SRC DST KEY=VALUE...     copy a DICOM file with new UIDs and the
                                                        given attributes (SpecificCharacterSet too)
    python qr_peer.py find PORT CALLING MODEL QUERY     C-FIND (MODEL: study|patient); QUERY is JSON
                                                        {keyword: value} incl. QueryRetrieveLevel
                                                        and optionally SpecificCharacterSet; prints
                                                        one JSON line per response identifier, then
                                                        {"status": "0x...."}
    python qr_peer.py cancel-find PORT CALLING QUERY    C-FIND-RQ and C-CANCEL-RQ sent back to back;
                                                        prints {"pending": N, "status": ...}
    python qr_peer.py cancel-move PORT CALLING DEST QUERY   the same for a C-MOVE
    python qr_peer.py move PORT CALLING DEST QUERY      C-MOVE (study root); prints the final status,
                                                        counts and the Failed SOP Instance UID List
    python qr_peer.py get PORT CALLING MODEL QUERY DIR  C-GET taking the SCP role of SR, SC,
                                                        Parametric Map and Key Object Selection;
                                                        stores into DIR; prints the final status,
                                                        counts and the files
    python qr_peer.py dump FILE...                      one JSON line of {keyword: value} per file
    python qr_peer.py store-scp PORT AE DIR CLASSES     a Storage SCP accepting only CLASSES (comma
                                                        separated UIDs); prints "ready"
"""
import io
import json
import os
import sys
import threading
import time

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt, build_role
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND, C_MOVE


def identifier(query):
    ds = Dataset()
    for k, v in query.items():
        if k == "SpecificCharacterSet":
            ds.SpecificCharacterSet = v
    for k, v in query.items():
        if k != "SpecificCharacterSet":
            setattr(ds, k, [identifier(i) for i in v] if isinstance(v, list) else v)
    return ds


def plain(ds):
    out = {}
    for elem in ds:
        if elem.VR == "SQ":
            out[elem.keyword] = [plain(i) for i in elem.value]
        elif elem.value is None or elem.value == "":
            out[elem.keyword] = ""
        elif elem.VM > 1:
            out[elem.keyword] = "\\".join(str(v) for v in elem.value)
        else:
            out[elem.keyword] = str(elem.value)
    return out


def associate(port, calling, contexts, roles=()):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for c in contexts:
        ae.add_requested_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", int(port), ae_title=os.environ.get("QR_CALLED", "TRIAGE"), ext_neg=list(roles))
    if not assoc.is_established:
        print(json.dumps({"status": "association refused"}))
        sys.exit(0)
    return assoc


def main():
    cmd = sys.argv[1]
    if cmd == "variant":
        src, dst = sys.argv[2], sys.argv[3]
        ds = dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for kv in sys.argv[4:]:
            k, v = kv.split("=", 1)
            setattr(ds, k, v)
        ds.save_as(dst)
        print(json.dumps({"StudyInstanceUID": ds.StudyInstanceUID, "SOPInstanceUID": ds.SOPInstanceUID}))
        return
    if cmd == "dump":
        for f in sys.argv[2:]:
            print(json.dumps(plain(dcmread(f))))
        return
    if cmd == "find":
        port, calling, model, query = sys.argv[2:6]
        cls = StudyRootQueryRetrieveInformationModelFind if model == "study" else PatientRootQueryRetrieveInformationModelFind
        assoc = associate(port, calling, [cls])
        status = None
        for st, ident in assoc.send_c_find(identifier(json.loads(query)), cls):
            if st is None:
                print(json.dumps({"status": "no response"}))
                break
            status = st.Status
            if ident is not None and status in (0xFF00, 0xFF01):
                print(json.dumps(plain(ident)))
            else:
                print(json.dumps({"status": f"0x{status:04X}", "comment": str(st.get("ErrorComment", ""))}))
        assoc.release()
        return
    if cmd in ("cancel-find", "cancel-move"):
        port, calling = sys.argv[2:4]
        dest = sys.argv[4] if cmd == "cancel-move" else None
        query = sys.argv[5] if dest else sys.argv[4]
        cls = StudyRootQueryRetrieveInformationModelMove if dest else StudyRootQueryRetrieveInformationModelFind
        assoc = associate(port, calling, [cls])
        cx = [c for c in assoc.accepted_contexts if c.abstract_syntax == cls][0]
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, cx.transfer_syntax[0] == ImplicitVRLittleEndian
        write_dataset(buf, identifier(json.loads(query)))
        rq = C_MOVE() if dest else C_FIND()
        rq.MessageID, rq.AffectedSOPClassUID, rq.Priority = 7, cls, 2
        if dest:
            rq.MoveDestination = dest
        rq.Identifier = io.BytesIO(buf.getvalue())
        cancel = C_CANCEL()
        cancel.MessageIDBeingRespondedTo = 7
        # Keep pynetdicom's reactor from taking the responses off the queue (as its own send_*
        # methods do), then send both back to back: the cancel is on the wire before the SCP
        # has answered anything.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.send_msg(rq, cx.context_id)
        assoc.dimse.send_msg(cancel, cx.context_id)
        pending, final = 0, None
        deadline = time.time() + 20
        while time.time() < deadline:
            _, rsp = assoc.dimse.get_msg(block=True)
            if rsp is None:
                continue
            if rsp.Status in (0xFF00, 0xFF01):
                pending += 1
                continue
            final = {"status": f"0x{rsp.Status:04X}", "pending": pending,
                     "remaining": getattr(rsp, "NumberOfRemainingSuboperations", None),
                     "completed": getattr(rsp, "NumberOfCompletedSuboperations", None)}
            break
        # Nothing may follow the final response.
        time.sleep(0.5)
        extra = assoc.dimse.msg_queue.qsize()
        assoc._reactor_checkpoint.set()
        assoc.release()
        final = final or {"status": "no final response"}
        final["after_final"] = extra
        print(json.dumps(final))
        return
    if cmd == "move":
        port, calling, dest, query = sys.argv[2:6]
        cls = StudyRootQueryRetrieveInformationModelMove
        assoc = associate(port, calling, [cls])
        final, pending = None, 0
        for st, ident in assoc.send_c_move(identifier(json.loads(query)), dest, cls):
            if st is None:
                break
            if st.Status in (0xFF00, 0xFF01):
                pending += 1
                continue
            final = {"status": f"0x{st.Status:04X}", "pending": pending, "comment": str(st.get("ErrorComment", "")),
                     "completed": st.get("NumberOfCompletedSuboperations"), "failed": st.get("NumberOfFailedSuboperations"),
                     "warning": st.get("NumberOfWarningSuboperations"),
                     "failed_list": str(ident.get("FailedSOPInstanceUIDList", "")) if ident is not None else ""}
        assoc.release()
        print(json.dumps(final or {"status": "no final response"}))
        return
    if cmd == "get":
        port, calling, model, query, out = sys.argv[2:7]
        os.makedirs(out, exist_ok=True)
        cls = StudyRootQueryRetrieveInformationModelGet if model == "study" else PatientRootQueryRetrieveInformationModelGet
        files = []

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            path = os.path.join(out, ds.SOPInstanceUID + ".dcm")
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            return 0x0000

        ae = AE(ae_title=calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        ae.add_requested_context(cls)
        # The storage classes of the node's result objects: report, heatmaps, rejection note.
        results = (Comprehensive3DSRStorage, SecondaryCaptureImageStorage, ParametricMapStorage, KeyObjectSelectionDocumentStorage)
        for c in results:
            ae.add_requested_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        roles = [build_role(c, scp_role=True) for c in results]
        assoc = ae.associate("127.0.0.1", int(port), ae_title="TRIAGE", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        if not assoc.is_established:
            print(json.dumps({"status": "association refused"}))
            return
        final, pending = None, 0
        for st, ident in assoc.send_c_get(identifier(json.loads(query)), cls):
            if st is None:
                break
            if st.Status in (0xFF00, 0xFF01):
                pending += 1
                continue
            final = {"status": f"0x{st.Status:04X}", "pending": pending,
                     "completed": st.get("NumberOfCompletedSuboperations"), "failed": st.get("NumberOfFailedSuboperations"),
                     "warning": st.get("NumberOfWarningSuboperations"),
                     "failed_list": str(ident.get("FailedSOPInstanceUIDList", "")) if ident is not None else ""}
        assoc.release()
        final = final or {"status": "no final response"}
        final["files"] = files
        print(json.dumps(final))
        return
    if cmd == "store-scp":
        port, aet, out, classes = sys.argv[2:6]
        os.makedirs(out, exist_ok=True)

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds.save_as(os.path.join(out, ds.SOPInstanceUID + ".dcm"), enforce_file_format=True)
            return 0x0000

        ae = AE(ae_title=aet)
        for c in classes.split(","):
            ae.add_supported_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.start_server(("127.0.0.1", int(port)), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        print("ready", flush=True)
        threading.Event().wait()
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
