"""A PACS that offers Storage Commitment (pynetdicom): stores what it is sent, answers each
N-ACTION (Push Model) and then, on an association it opens to the requester as real PACSs do,
sends the N-EVENT-REPORT: every requested instance it holds is committed, any other fails with
0x0112 (no such object instance). With --forget it holds nothing, so everything fails.

    python commit_scp.py AE PORT OUTDIR NODE_HOST NODE_PORT NODE_AE [--forget]

Prints one line per event (STORED, ACTION, REPORT) on stdout.
"""
import os
import sys
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

me, port, out, node_host, node_port, node_ae = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
forget = "--forget" in sys.argv
held = set()


def say(*words):
    print(*words, flush=True)


def on_store(event):
    ds = event.dataset
    ds.file_meta = event.file_meta
    uid = str(ds.SOPInstanceUID)
    ds.save_as(os.path.join(out, uid + ".dcm"), enforce_file_format=True)
    if not forget:
        held.add(uid)
    say("STORED", uid)
    return 0x0000


def report(transaction, refs):
    time.sleep(0.3)
    ds = Dataset()
    ds.TransactionUID = transaction
    ok, failed = [], []
    for r in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = r.ReferencedSOPClassUID
        item.ReferencedSOPInstanceUID = r.ReferencedSOPInstanceUID
        if str(r.ReferencedSOPInstanceUID) in held:
            ok.append(item)
        else:
            item.FailureReason = 0x0112
            failed.append(item)
    if ok:
        ds.ReferencedSOPSequence = ok
    if failed:
        ds.FailedSOPSequence = failed
    ae = AE(ae_title=me)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(node_host, node_port, ae_title=node_ae, ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
    if not assoc.is_established:
        say("REPORT association-failed")
        return
    status, _ = assoc.send_n_event_report(ds, 2 if failed else 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
    assoc.release()
    say("REPORT", f"0x{status.Status:04X}" if status else "no-response", len(ok), len(failed))


def on_action(event):
    info = event.action_information
    refs = list(info.ReferencedSOPSequence)
    say("ACTION", info.TransactionUID, len(refs))
    threading.Thread(target=report, args=(str(info.TransactionUID), refs)).start()
    return 0x0000, None


ae = AE(ae_title=me)
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(StorageCommitmentPushModel)
say("READY")
ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_N_ACTION, on_action)])
