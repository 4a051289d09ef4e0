"""pynetdicom as an independent DICOM peer for the integration tests.

Each subcommand prints one machine-readable line per event (flushed), so the Rust tests can
assert on exactly what the peer saw:
  ESTABLISHED <ts uid of each accepted context>      REJECTED result=<r> source=<s> reason=<n>
  ECHO <status>                                      STORED <status> <error comment> <path>
  NCREATE <status> [<error id>] <uid>                NSET <status> [<error id>]
"""
import argparse
import sys
import time

from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

_config.STORE_SEND_CHUNKED_DATASET = True  # send files as they are on disk, never re-encoded

# pynetdicom 3.0.4 races with a fast peer (see scripts/load_senders.py): its reactor thread can
# take a C-STORE response off the queue before send_c_store() waits for it and drop it as an
# "unexpected service message"; send_c_store() then reports no status. Seen in the test suite
# under load on a refusal the node answers at once. The response was sent and is correct, so it
# is put back on the queue for send_c_store() to find.
_serve_request = Association._serve_request


def _keep_responses(self, msg, context_id):
    if self.is_requestor and not msg.is_valid_request:
        self.dimse.msg_queue.put((context_id, msg))
        return
    _serve_request(self, msg, context_id)


Association._serve_request = _keep_responses

CT = "1.2.840.10008.5.1.4.1.1.2"


def say(*parts):
    print(*parts, flush=True)


def rejection_recorder():
    """Capture the raw A-ASSOCIATE-RJ PDU (PS3.8 9.3.4): result, source, reason bytes."""
    seen = {}

    def on_data(event):
        data = bytes(event.data)
        if data and data[0] == 0x03 and len(data) >= 10:
            seen["rj"] = (data[7], data[8], data[9])

    return seen, [(evt.EVT_DATA_RECV, on_data)]


def associate(args, contexts):
    ae = AE(ae_title=args.aet)
    ae.acse_timeout = 10
    ae.dimse_timeout = 10
    ae.network_timeout = 10
    for ctx in contexts:
        ae.add_requested_context(*ctx)
    seen, handlers = rejection_recorder()
    tls_args = None
    if args.tls_ca:
        # DICOM over TLS (PS3.15 B.9): the node's certificate is checked against the CA and
        # must name the host; our certificate (if given) is shown when the node asks for one.
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
        if args.tls_cert:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        tls_args = (ctx, "127.0.0.1")
    try:
        assoc = ae.associate("127.0.0.1", args.port, ae_title=args.aec, evt_handlers=handlers, tls_args=tls_args)
    except OSError as e:  # the TLS handshake failed
        say(f"FAILED {type(e).__name__}")
        return None
    if assoc.is_established:
        say("ESTABLISHED", " ".join(cx.transfer_syntax[0] for cx in assoc.accepted_contexts))
        return assoc
    if "rj" in seen:
        r, s, n = seen["rj"]
        say(f"REJECTED result={r} source={s} reason={n}")
    else:
        say("FAILED no association")
    return None


def file_contexts(paths):
    from pydicom.filereader import read_file_meta_info

    pairs = []
    for p in paths:
        meta = read_file_meta_info(p)
        pair = (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        if pair not in pairs:
            pairs.append(pair)
    return [(sop, [ts]) for sop, ts in pairs]


def cmd_echo(args):
    assoc = associate(args, [(Verification,)])
    if assoc:
        for _ in range(args.repeat):
            st = assoc.send_c_echo()
            say(f"ECHO 0x{st.Status:04X}" if "Status" in st else "ECHO none")
        assoc.release()


def cmd_store(args):
    assoc = associate(args, file_contexts(args.files))
    if not assoc:
        return
    for path in args.files:
        st = assoc.send_c_store(path)
        if "Status" in st:
            comment = str(st.get("ErrorComment", "-")).replace(" ", "_") or "-"
            say(f"STORED 0x{st.Status:04X} {comment} {path}")
        else:
            say(f"STORED none - {path}")
            break
    assoc.release()


def cmd_hold(args):
    assoc = associate(args, [(Verification,)])
    if assoc:
        time.sleep(args.seconds)
        assoc.release()
        say("RELEASED")


def cmd_propose(args):
    assoc = associate(args, [(CT, args.ts.split(","))])
    if assoc:
        assoc.release()


def cmd_make_bad(args):
    """Write test inputs that a Storage SCP must refuse."""
    import pydicom

    ds = pydicom.dcmread(args.source)
    raw = open(args.source, "rb").read()
    # 1. Truncated: the pixel data element claims more bytes than follow.
    open(f"{args.out}/truncated.dcm", "wb").write(raw[: len(raw) - 1000])
    # 2. Garbage after a valid File Meta Information.
    ds2 = pydicom.dcmread(args.source, stop_before_pixels=True)
    ds2.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds2.save_as(f"{args.out}/garbage.dcm", enforce_file_format=True)
    from pynetdicom.dsutils import split_dataset

    _, offset = split_dataset(f"{args.out}/garbage.dcm")
    head = open(f"{args.out}/garbage.dcm", "rb").read()[:offset]
    open(f"{args.out}/garbage.dcm", "wb").write(head + b"\x08\x00\x16\x00ZZ\x04\x00this is not DICOM at all")
    # 3. The request (file meta) says CT Image Storage, the data set says MR Image Storage.
    ds3 = pydicom.dcmread(args.source)
    ds3.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds3.SOPInstanceUID = ds3.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds3.file_meta.MediaStorageSOPClassUID = CT
    ds3.save_as(f"{args.out}/class_mismatch.dcm", enforce_file_format=False)
    # 4. The request's SOP Instance UID differs from the data set's.
    ds4 = pydicom.dcmread(args.source)
    ds4.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds4.save_as(f"{args.out}/instance_mismatch.dcm", enforce_file_format=False)
    say("MADE")


MPPS = "1.2.840.10008.3.1.2.3.3"


def mpps_create(assoc, study_uid, uid=None, status="IN PROGRESS"):
    """N-CREATE a step for `study_uid`, with the patient's identity a modality sends."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = "PLANTEDACC77"
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepID = "SPS1"
    item.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "PLANTED^MPPSPATIENT"
    ds.PatientID = "PLANTEDMPPSID"
    ds.PatientBirthDate = "19230417"
    ds.PatientSex = "F"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "PYNETDICOM"
    ds.PerformedProcedureStepStartDate = "20261201"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "PLANTED description"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    st, _ = assoc.send_n_create(ds, MPPS, uid)
    return st


def mpps_set(assoc, uid, state, files):
    """N-SET the step's state and its Performed Series Sequence (the instances of `files`)."""
    import pydicom
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PerformedProcedureStepStatus = state
    ds.PerformedProcedureStepEndDate = "20261201"
    ds.PerformedProcedureStepEndTime = "102000"
    series = {}
    for f in files:
        d = pydicom.dcmread(f, stop_before_pixels=True)
        ref = Dataset()
        ref.ReferencedSOPClassUID = d.SOPClassUID
        ref.ReferencedSOPInstanceUID = d.SOPInstanceUID
        series.setdefault(d.SeriesInstanceUID, []).append(ref)
    items = []
    for uid_, refs in series.items():
        it = Dataset()
        it.SeriesInstanceUID = uid_
        it.PerformingPhysicianName = "PLANTED^PHYSICIAN"
        it.ProtocolName = "HEAD"
        it.OperatorsName = "PLANTED^OPERATOR"
        it.SeriesDescription = "axial"
        it.RetrieveAETitle = ""
        it.ReferencedImageSequence = refs
        it.ReferencedNonImageCompositeSOPInstanceSequence = []
        items.append(it)
    ds.PerformedSeriesSequence = items
    st, _ = assoc.send_n_set(ds, MPPS, uid)
    return st


def status_line(kind, st):
    if "Status" not in st:
        return f"{kind} none"
    extra = f" {st.ErrorID:04X}" if "ErrorID" in st else ""
    return f"{kind} 0x{st.Status:04X}{extra}"


def cmd_mpps(args):
    """A modality's procedure step: N-CREATE, C-STOREs, N-SET (or N-SET before the stores)."""
    import pydicom
    from pydicom.uid import generate_uid

    files = args.store
    study = args.study or pydicom.dcmread((files or args.list)[0], stop_before_pixels=True).StudyInstanceUID
    contexts = [(MPPS, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])] + (file_contexts(files) if files else [])
    assoc = associate(args, contexts)
    if not assoc:
        return
    uid = generate_uid()
    st = mpps_create(assoc, study, uid)
    say(status_line("NCREATE", st), uid)
    listed = args.list if args.list is not None else files
    if args.set_first:
        say(status_line("NSET", mpps_set(assoc, uid, args.state, listed)))
    for path in files:
        st = assoc.send_c_store(path)
        say(f"STORED 0x{st.Status:04X} - {path}" if "Status" in st else f"STORED none - {path}")
    if not args.set_first:
        say(status_line("NSET", mpps_set(assoc, uid, args.state, listed)))
    if args.probe:
        say(status_line("NSET-AGAIN", mpps_set(assoc, uid, "COMPLETED", listed)))
        say(status_line("NSET-UNKNOWN", mpps_set(assoc, generate_uid(), "COMPLETED", listed)))
        say(status_line("NCREATE-DUPLICATE", mpps_create(assoc, study, uid)))
        say(status_line("NCREATE-COMPLETED", mpps_create(assoc, study, generate_uid(), "COMPLETED")))
    assoc.release()


def nested(depth):
    """Explicit VR little endian bytes: Referenced Study Sequence (0008,1110) nested `depth`
    deep, every sequence and item of undefined length (16 bytes a level, twice)."""
    down = b"\x08\x00\x10\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    up = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return down * depth + up * depth


def cmd_raw(args):
    """A C-STORE data set or C-FIND identifier sent exactly as the bytes of --data (after its
    first byte, the fuzz targets' transfer syntax selector: 0 explicit, 1 implicit VR little
    endian, 2 explicit big endian), then a C-ECHO on a new association."""
    import pynetdicom.association as pa
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    data = open(args.data, "rb").read()
    ts = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian][data[0] % 3]
    pa.encode = lambda *a, **k: data[1:]
    find = "1.2.840.10008.5.1.4.1.2.2.1"
    assoc = associate(args, [(find if args.service == "find" else CT, [ts])])
    if not assoc:
        return
    if args.service == "find":
        for st, _ in assoc.send_c_find(Dataset(), find):
            say(status_line("FIND", st))
            if "Status" not in st or st.Status not in (0xFF00, 0xFF01):
                break
    else:
        from pydicom.dataset import FileMetaDataset

        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CT, "1.2.3.4.5.6.7"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        st = assoc.send_c_store(ds)
        say(status_line("STORED", st))
    assoc.release()
    after = associate(args, [(Verification,)])
    if after:
        st = after.send_c_echo()
        say(f"ECHO 0x{st.Status:04X}" if "Status" in st else "ECHO none")
        after.release()


def cmd_deep(args):
    """A C-FIND identifier or an MPPS N-CREATE data set nested `--depth` levels deep (raw bytes:
    pydicom could not encode it), then a C-ECHO on a new association: is the node still there?"""
    import pynetdicom.association as pa
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    find = "1.2.840.10008.5.1.4.1.2.2.1"
    if args.service == "find":
        raw = b"\x08\x00\x52\x00CS\x06\x00STUDY " + nested(args.depth)
        contexts = [(find, [ExplicitVRLittleEndian])]
    else:
        raw = nested(args.depth) + b"\x40\x00\x52\x02CS\x0c\x00IN PROGRESS "
        contexts = [(MPPS, [ExplicitVRLittleEndian])]
    pa.encode = lambda *a, **k: raw
    assoc = associate(args, contexts)
    if not assoc:
        return
    if args.service == "find":
        for st, _ in assoc.send_c_find(Dataset(), find):
            say(status_line("FIND", st))
            if "Status" not in st or st.Status not in (0xFF00, 0xFF01):
                break
    else:
        st, _ = assoc.send_n_create(Dataset(), MPPS, None)
        say(status_line("NCREATE", st))
    if assoc.is_established:
        assoc.release()
    time.sleep(0.5)
    cmd_echo(argparse.Namespace(**{**vars(args), "repeat": 1}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--aet", default="PYNETDICOM")
    p.add_argument("--aec", default="TRIAGE")
    p.add_argument("--tls-ca", help="call over TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", help="our certificate (PEM), with --tls-key")
    p.add_argument("--tls-key")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--repeat", type=int, default=1)
    s = sub.add_parser("store")
    s.add_argument("files", nargs="+")
    h = sub.add_parser("hold")
    h.add_argument("--seconds", type=float, default=5)
    pr = sub.add_parser("propose")
    pr.add_argument("--ts", required=True)
    b = sub.add_parser("make-bad")
    b.add_argument("--source", required=True)
    b.add_argument("--out", required=True)
    r = sub.add_parser("raw")
    r.add_argument("--service", choices=["store", "find"], required=True)
    r.add_argument("--data", required=True)
    d = sub.add_parser("deep")
    d.add_argument("--service", choices=["find", "mpps"], required=True)
    d.add_argument("--depth", type=int, default=100000)
    m = sub.add_parser("mpps")
    m.add_argument("--study")
    m.add_argument("--state", default="COMPLETED")
    m.add_argument("--set-first", action="store_true")
    m.add_argument("--probe", action="store_true")
    m.add_argument("--list", nargs="*")
    m.add_argument("--store", nargs="*", default=[])
    args = p.parse_args()
    globals()["cmd_" + args.cmd.replace("-", "_")](args)


if __name__ == "__main__":
    sys.exit(main())
