"""Writes the fuzz targets' seed corpus into corpus/<target>/: real bytes, small.

- association_request, message_stream: what DCMTK's echoscu and storescu send on the wire to
  DCMTK's storescp (recorded through a loopback proxy): the A-ASSOCIATE-RQ, then the P-DATA-TF
  PDUs of a C-ECHO and of a C-STORE of pydicom's small CT, and the A-RELEASE-RQ.
- command_set: the command sets inside those PDUs.
- dataset_scan, deidentify, query_identifier, commitment_report: a selector byte (0 explicit,
  1 implicit VR little endian) then a data set: the CT's header, a nested sequence, a C-FIND
  identifier, a Storage Commitment report.

Run with the test venv's Python: .venv/bin/python tests/fuzz/make-seeds.py
"""
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time

from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
CT = get_testdata_file("CT_small.dcm")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def record(tool_args, files=()):
    """Run a DCMTK SCU through a proxy to storescp; return the bytes the SCU sent."""
    scp_port, proxy_port = free_port(), free_port()
    out = os.path.join(HERE, "target", "seed-scp")
    os.makedirs(out, exist_ok=True)
    scp = subprocess.Popen(["storescp", "-od", out, str(scp_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", proxy_port))
    lsock.listen(1)
    sent = bytearray()

    def pump(src, dst, keep):
        while True:
            b = src.recv(65536)
            if not b:
                break
            if keep is not None:
                keep.extend(b)
            dst.sendall(b)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def serve():
        c, _ = lsock.accept()
        u = socket.create_connection(("127.0.0.1", scp_port))
        t = threading.Thread(target=pump, args=(u, c, None))
        t.start()
        pump(c, u, sent)
        t.join()

    t = threading.Thread(target=serve)
    t.start()
    subprocess.run([*tool_args, "127.0.0.1", str(proxy_port), *files], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t.join()
    scp.kill()
    lsock.close()
    return bytes(sent)


def pdus(stream):
    out, at = [], 0
    while at + 6 <= len(stream):
        n = struct.unpack(">I", stream[at + 2 : at + 6])[0]
        out.append(stream[at : at + 6 + n])
        at += 6 + n
    return out


def commands(pdu_list):
    """Command set bytes from P-DATA-TF PDUs (message control header bit 0 set)."""
    found, current = [], bytearray()
    for p in pdu_list:
        if p[0] != 0x04:
            continue
        at = 6
        while at + 6 <= len(p):
            n = struct.unpack(">I", p[at : at + 4])[0]
            mch = p[at + 5]
            if mch & 1:
                current.extend(p[at + 6 : at + 4 + n])
                if mch & 2:
                    found.append(bytes(current))
                    current = bytearray()
            at += 4 + n
    return found


def raw(ds, implicit):
    from pydicom.filewriter import write_dataset
    from pydicom.filebase import DicomBytesIO

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def main():
    echo = record(["echoscu", "-aet", "ECHOSCU", "-aec", "TRIAGE"])
    store = record(["storescu", "-aet", "STORESCU", "-aec", "TRIAGE"], [CT])
    for name, stream in [("echo", echo), ("store", store)]:
        ps = pdus(stream)
        write("association_request", f"{name}_rq", ps[0])
        write("message_stream", f"{name}_after_ac", b"\x00" + b"".join(ps[1:]))
        for i, c in enumerate(commands(ps)):
            write("command_set", f"{name}_{i}", c)
    write("association_request", "release_rq", pdus(echo)[-1])

    ct = dcmread(CT)
    del ct.PixelData
    header = Dataset()
    header.update(ct)
    nested = Dataset()
    nested.PatientName = "Nested^Name"
    nested.ReferencedSOPInstanceUID = "1.2.3.4"
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-D3000", "SRT", "Chest"
    nested.AnatomicRegionSequence = Sequence([inner])
    header.ReferencedImageSequence = Sequence([nested])
    for implicit in (0, 1):
        data = bytes([implicit]) + raw(header, bool(implicit))
        write("dataset_scan", f"ct_header_{implicit}", data)
        write("deidentify", f"ct_header_{implicit}", data)

    find = Dataset()
    find.QueryRetrieveLevel = "STUDY"
    find.PatientName = "DOE*"
    find.PatientID = ""
    find.StudyDate = "20240101-20241231"
    find.ModalitiesInStudy = "SR\\SC"
    find.StudyInstanceUID = ""
    find.ReferencedStudySequence = Sequence([Dataset()])
    write("query_identifier", "study_find", b"\x00" + raw(find, False))
    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.StudyInstanceUID = "1.2.3"
    series.SeriesInstanceUID = ["1.2.3.4", "1.2.3.5"]
    series.Modality = "SR"
    write("query_identifier", "series_move", b"\x01" + raw(series, True))

    report = Dataset()
    report.TransactionUID = "1.2.3.99"
    ok = Dataset()
    ok.ReferencedSOPClassUID, ok.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", "1.2.3.100"
    bad = Dataset()
    bad.ReferencedSOPClassUID, bad.ReferencedSOPInstanceUID, bad.FailureReason = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.101", 0x0112
    report.ReferencedSOPSequence = Sequence([ok])
    report.FailedSOPSequence = Sequence([bad])
    write("commitment_report", "report", b"\x00" + raw(report, False))
    print("seeds written", file=sys.stderr)


if __name__ == "__main__":
    main()
