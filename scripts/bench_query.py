"""Timing client of scripts/bench-query.sh (pynetdicom): the same C-FIND and C-MOVE requests
to triage-node and to Orthanc, interleaved, each target on its own open association.

    python bench_query.py studies PORT CALLED               the Study Instance UIDs (one per line)
    python bench_query.py load PORT CALLED DEST UIDS_FILE   C-MOVE every study to DEST, 500 per request
    python bench_query.py time ROUNDS NODE_PORT ORTHANC_PORT DEST
                                                            the table (JSON lines)
"""
import json
import random
import statistics
import sys
import time

import socket

from pydicom.dataset import Dataset
from pynetdicom import AE, transport
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

CALLING = "BENCHSCU"

# Small PDUs go out at once (pynetdicom leaves Nagle on: a command and its data set in two writes
# would wait for the peer's delayed ACK, ~40 ms, on every request, whoever the peer is).
_create = transport.AssociationSocket._create_socket


def _nodelay(self, *args, **kwargs):
    sock = _create(self, *args, **kwargs)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


transport.AssociationSocket._create_socket = _nodelay


def assoc(port, called):
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    ae.add_requested_context(FIND)
    ae.add_requested_context(MOVE)
    a = ae.associate("127.0.0.1", int(port), ae_title=called)
    if not a.is_established:
        sys.exit(f"no association with {called} on {port}")
    return a


def study_query(**keys):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for k in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription"):
        setattr(ds, k, "")
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def find(a, ds):
    n = 0
    for st, ident in a.send_c_find(ds, FIND):
        if st is None:
            raise SystemExit("C-FIND: no response")
        if st.Status in (0xFF00, 0xFF01):
            n += 1
        elif st.Status != 0:
            raise SystemExit(f"C-FIND status 0x{st.Status:04X}")
    return n


def move(a, dest, uids):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uids
    final = None
    for st, _ in a.send_c_move(ds, dest, MOVE):
        if st is not None and st.Status not in (0xFF00, 0xFF01):
            final = st
    if final is None or final.Status != 0:
        raise SystemExit(f"C-MOVE failed: {final}")
    return final.NumberOfCompletedSuboperations


def main():
    cmd = sys.argv[1]
    if cmd == "studies":
        a = assoc(sys.argv[2], sys.argv[3])
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        for st, ident in a.send_c_find(ds, FIND):
            if st is not None and st.Status in (0xFF00, 0xFF01):
                print(ident.StudyInstanceUID)
        a.release()
        return
    if cmd == "load":
        port, called, dest, path = sys.argv[2:6]
        uids = open(path).read().split()
        a = assoc(port, called)
        done = 0
        for i in range(0, len(uids), 500):
            done += move(a, dest, uids[i:i + 500])
        a.release()
        print(done)
        return
    if cmd == "time":
        rounds, node_port, orthanc_port, dest = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        targets = {"triage-node": assoc(node_port, "TRIAGE"), "Orthanc": assoc(orthanc_port, "ORTHANC")}
        # What to ask, per round (the same for both targets in that round).
        uids = [l.strip() for l in open(sys.argv[6]) if l.strip()] if len(sys.argv) > 6 else []
        rng = random.Random(7)
        n_studies = len(uids)
        kinds = {
            "StudyInstanceUID": lambda: study_query(StudyInstanceUID=rng.choice(uids)),
            "AccessionNumber": lambda: study_query(AccessionNumber=f"BACC{rng.randrange(n_studies):06d}"),
            "PatientID": lambda: study_query(PatientID=f"BENCH{rng.randrange(n_studies // 2):05d}"),
            "PatientName wildcard": lambda: study_query(PatientName=f"bench^patient0{rng.randrange(max(1, n_studies // 2000))}{rng.randrange(10)}{rng.randrange(10)}*"),
            "StudyDate range (7 days)": lambda: study_query(StudyDate=(lambda d: f"2024{d[0]:02d}{d[1]:02d}-2024{d[0]:02d}{d[1] + 6:02d}")((rng.randrange(1, 13), rng.randrange(1, 20)))),
        }
        for kind, make in kinds.items():
            times = {t: [] for t in targets}
            matches = {t: 0 for t in targets}
            for _ in range(rounds):
                ds = make()
                for name, a in targets.items():
                    t0 = time.perf_counter()
                    matches[name] = find(a, ds)
                    times[name].append((time.perf_counter() - t0) * 1000)
            node, orth = statistics.median(times["triage-node"]), statistics.median(times["Orthanc"])
            print(json.dumps({"query": kind, "matches_last": matches, "node_ms": round(node, 2), "orthanc_ms": round(orth, 2), "orthanc_over_node": round(orth / node, 2)}))
        times = {t: [] for t in targets}
        for _ in range(max(5, rounds // 3)):
            uid = rng.choice(uids)
            for name, a in targets.items():
                t0 = time.perf_counter()
                move(a, dest, [uid])
                times[name].append((time.perf_counter() - t0) * 1000)
        node, orth = statistics.median(times["triage-node"]), statistics.median(times["Orthanc"])
        print(json.dumps({"query": "C-MOVE one study", "node_ms": round(node, 2), "orthanc_ms": round(orth, 2), "orthanc_over_node": round(orth / node, 2)}))
        for a in targets.values():
            a.release()
        return
    sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
