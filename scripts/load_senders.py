"""Load generator for scripts/bench-load.sh: many modalities sending at once, for a duration.

Each of --processes processes runs --threads threads; each thread is one modality that sends
one study per association, again and again, until --seconds have passed: a chest radiograph
study (1 or 2 images from the demonstration cases, triaged by the demo model and reported to the
PACS) one time in four, otherwise a 20-slice CT series of pydicom's small CT (stored; no model
takes it). Every instance gets fresh UIDs. Prints one JSON line per process with its counts:
instances acknowledged with Success, failed (any other status or none), associations, studies
(by kind).
"""
import argparse
import copy
import json
import multiprocessing
import os
import random
import threading
import time
import uuid

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, _config
from pynetdicom.association import Association

_config.LOG_HANDLER_LEVEL = "none"

# pynetdicom 3.0.4 races with a fast peer: its association's reactor thread can take a C-STORE
# response off the message queue before send_c_store() has paused it, drop it as an "unexpected
# C-STORE service message", and send_c_store() then waits out its timeout and aborts (seen here
# about once in 500 associations against the node, which answers within a millisecond or two of
# the last fragment; not against storescp, which answers later). The response was sent and is
# correct, so it is put back on the queue for send_c_store() to find.
_serve_request = Association._serve_request


def _keep_responses(self, msg, context_id):
    if self.is_requestor and not msg.is_valid_request:
        self.dimse.msg_queue.put((context_id, msg))
        return
    _serve_request(self, msg, context_id)


Association._serve_request = _keep_responses


def fresh(ds, study, series, patient):
    ds = copy.deepcopy(ds)  # a shallow copy shares its elements with the original
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient
    return ds


def modality(index, port, until, chest, ct, counts, lock):
    rng = random.Random(index)
    aet = f"LOAD{index:03d}"
    while time.time() < until:
        study, series = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
        patient = f"LOAD{index:03d}{rng.randrange(10**6):06d}"
        if rng.random() < 0.25:
            kind = "chest"
            sets = [fresh(rng.choice(chest), study, series, patient) for _ in range(rng.randint(1, 2))]
        else:
            kind = "ct"
            sets = []
            for n in range(20):
                d = fresh(ct, study, series, patient)
                d.InstanceNumber = n + 1
                sets.append(d)
        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for sop, ts in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in sets}:
            ae.add_requested_context(sop, [ts])
        ok = failed = 0
        why = {}
        assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
        if assoc.is_established:
            for d in sets:
                if not assoc.is_established:
                    failed += 1
                    why["not sent: the association ended"] = why.get("not sent: the association ended", 0) + 1
                    continue
                t0 = time.time()
                try:
                    rsp = assoc.send_c_store(d)
                    status = rsp.Status if rsp and "Status" in rsp else None
                    reason = f"status 0x{status:04X}" if status is not None else (f"no response, association aborted after {time.time() - t0:.0f}s" if assoc.is_aborted else "no response")
                except Exception as e:
                    status, reason = None, f"{type(e).__name__}: {e}"[:100]
                if status == 0x0000:
                    ok += 1
                else:
                    failed += 1
                    why[reason] = why.get(reason, 0) + 1
            assoc.release()
        else:
            failed += len(sets)
            why["association " + ("rejected" if assoc.is_rejected else "not established")] = len(sets)
        with lock:
            counts["ok"] += ok
            counts["failed"] += failed
            counts["associations"] += 1
            counts[kind] += 1
            for k, v in why.items():
                counts["why"][k] = counts["why"].get(k, 0) + v


def process(index, threads, port, until, cases):
    chest = [dcmread(os.path.join(cases, f)) for f in sorted(os.listdir(cases))[:8]]
    ct = dcmread(get_testdata_file("CT_small.dcm"))
    counts = {"ok": 0, "failed": 0, "associations": 0, "chest": 0, "ct": 0, "why": {}}
    lock = threading.Lock()
    ts = [threading.Thread(target=modality, args=(index * threads + t, port, until, chest, ct, counts, lock)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps(counts), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--cases", required=True)
    a = p.parse_args()
    until = time.time() + a.seconds
    procs = [multiprocessing.Process(target=process, args=(i, a.threads, a.port, until, a.cases)) for i in range(a.processes)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()


if __name__ == "__main__":
    main()
