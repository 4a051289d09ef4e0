"""Fault tests for the node (a script, not timed tests; scripts/fault-tests.sh runs it).

  disk-full   the data directory on a small tmpfs: an instance that does not fit is refused with
              0xA700 and nothing of it is kept; once space returns, it is stored.
  postgres    PostgreSQL restarted while a modality sends: no Success for an instance that is not
              stored (every acknowledged instance has its row), and the node stores again after.
  sigkill     SIGKILL at random points, N times, while studies are received, triaged and their
              reports delivered to a PACS (DCMTK storescp): every acknowledged instance is
              stored, every study gets its result, every result's report reaches the PACS, and
              a report sent twice carries the same SOP Instance UID both times.

Prints one line per check and exits non-zero if any fails. Needs root for the tmpfs mount
(disk-full) and pg_ctlcluster (postgres).
"""
import argparse
import copy
import hashlib
import hmac
import sqlite3
import threading
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from pydicom import dcmread
from pynetdicom import AE, _config

_config.LOG_HANDLER_LEVEL = "none"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "triage-node")
CASES = os.path.join(ROOT, ".testdata", "demo-cases")
failures = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Node:
    def __init__(self, work, data_dir, db_url=None, models=None, destinations=(), quiet="1s"):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.config = os.path.join(work, "node.toml")
        self.log_path = os.path.join(work, "node.log")
        db = f'[database]\nurl = "{db_url}"\n' if db_url else ""
        dest = ", ".join(f'"{d}"' for d in destinations)
        models_dir = models or os.path.join(work, "no-models")
        with open(self.config, "w") as f:
            f.write(
                f'[dicom]\nbind = "127.0.0.1"\nport = 0\nrequire_registered_calling_ae = false\n'
                f'[storage]\ndata_dir = "{data_dir}"\nmin_free_disk = "0"\n'
                f'[ingest]\nstudy_quiet_period = "{quiet}"\n[deid]\ndemo_keys = true\n'
                f'[inference]\nmodels_dir = "{models_dir}"\ndevice = "cpu"\n'
                f'[results]\ndestinations = [{dest}]\n'
                f'[delivery]\npoll_interval = "200ms"\nretry_base = "500ms"\nretry_max = "2s"\ntimeout = "10s"\nlease = "30s"\n'
                f'[http]\nenabled = false\n{db}[log]\nformat = "text"\nlevel = "info,sqlx=warn"\n'
            )
        self.proc = None
        self.port = None

    def cli(self, *args):
        return subprocess.run([BIN, "--config", self.config, *args], capture_output=True, text=True)

    def start(self):
        log = open(self.log_path, "a")
        offset = log.tell()
        self.proc = subprocess.Popen([BIN, "--config", self.config, "serve"], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(self.log_path) as f:
                f.seek(offset)
                ports = re.findall(r"listening port=(\d+)", f.read())
            if ports:
                self.port = int(ports[-1])
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"node exited at start:\n{open(self.log_path).read()[-3000:]}")
            time.sleep(0.05)
        raise SystemExit("node did not start")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def fresh(ds, study_uid, patient):
    """A copy of `ds` as a new instance of study `study_uid`."""
    ds = copy.deepcopy(ds)  # a shallow copy shares its elements with the original
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient
    ds.AccessionNumber = patient[-16:]
    return ds


def send(port, datasets, aet="FAULTS", stop_on_failure=False):
    """Send each data set in one association; returns [(SOP Instance UID, status or None)]."""
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for cx in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(cx[0], [cx[1]])
    out = []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    except Exception:
        return [(d.SOPInstanceUID, None) for d in datasets]
    if not assoc.is_established:
        return [(d.SOPInstanceUID, None) for d in datasets]
    for d in datasets:
        status = None
        if assoc.is_established:
            try:
                rsp = assoc.send_c_store(d)
                status = rsp.Status if rsp and "Status" in rsp else None
            except Exception:
                status = None
        out.append((d.SOPInstanceUID, status))
        if stop_on_failure and status not in (0x0000,):
            break
    if assoc.is_established:
        assoc.release()
    return out


def deid_uid(original):
    """The node's de-identified UID for `original` under the demo keys (deid::Keys::uid)."""
    key = hashlib.sha256(b"triage-node public demo key: pseudonym").digest()
    mac = hmac.new(key, b"uid\0" + original.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(mac[:16], 'big')}"


def query(sql, data_dir=None, pg_url=None):
    """Rows of `sql` from the node's database (SQLite in data_dir, or PostgreSQL)."""
    if pg_url:
        out = subprocess.run(["psql", "-At", "-F", "\t", pg_url, "-c", sql], capture_output=True, text=True, check=True).stdout
        return [tuple(l.split("\t")) for l in out.splitlines() if l]
    db = sqlite3.connect(os.path.join(data_dir, "triage.db"))
    try:
        return [tuple(str(v) for v in r) for r in db.execute(sql)]
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------


def disk_full(work):
    mnt = os.path.join(work, "small")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], check=True)
    try:
        node = Node(os.path.join(work, "node"), os.path.join(mnt, "data"))
        node.start()
        base = dcmread(os.path.join(CASES, "case000.dcm"))
        # A 24 MB instance: the same image with its pixel data repeated.
        big = fresh(base, f"2.25.{uuid.uuid4().int}", "DISKFULL1")
        big.Rows = big.Rows * 48
        big.PixelData = bytes(big.PixelData) * 48
        # Fill the file system until about 8 MB are left.
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"\0" * max(0, free - (8 << 20)))
        rows_before = len(stored_files(mnt))
        result = send(node.port, [big])
        check(result[0][1] == 0xA700, f"disk full mid-transfer: the instance is refused with 0xA700 (got {fmt(result[0][1])})")
        check(len(stored_files(mnt)) == rows_before, "disk full: nothing of the refused instance is in the store")
        check(not spool_files(mnt), "disk full: nothing is left in the spool")
        check(node.alive(), "disk full: the node is still running")
        st = os.statvfs(mnt)
        print(f"INFO disk full: {st.f_bavail * st.f_frsize >> 20} MiB free after the refusal", flush=True)
        small = fresh(base, f"2.25.{uuid.uuid4().int}", "DISKFULL2")
        r = send(node.port, [small])
        check(r[0][1] == 0x0000, f"disk full: a small instance that fits is still stored (got {fmt(r[0][1])})")
        os.remove(os.path.join(mnt, "filler"))
        r = send(node.port, [big])
        check(r[0][1] == 0x0000, f"disk full: once space returns the large instance is stored (got {fmt(r[0][1])})")
        check(len(stored_files(mnt)) == rows_before + 2, f"disk full: the store holds exactly the two acknowledged instances ({len(stored_files(mnt)) - rows_before})")
        node.stop()
    finally:
        subprocess.run(["umount", "-l", mnt])


def stored_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data", "store")) for f in fs]


def spool_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data", "spool")) for f in fs]


def fmt(status):
    return "no response" if status is None else f"0x{status:04X}"


def postgres(work):
    name = f"faults_{os.getpid()}"
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", f"CREATE DATABASE {name}"], check=True)
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    cluster = sorted(os.listdir("/etc/postgresql"))[0]
    try:
        node = Node(os.path.join(work, "node"), os.path.join(work, "data"), db_url=url)
        node.start()
        base = dcmread(os.path.join(CASES, "case001.dcm"))
        study = f"2.25.{uuid.uuid4().int}"
        results = []

        def outage():
            # PostgreSQL goes away for 3 s while the stores go on, then comes back.
            time.sleep(0.3)
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "stop", "-m", "fast"], check=True)
            time.sleep(3)
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start"], check=True)

        before = query("SELECT pg_postmaster_start_time()", pg_url=url)
        t = threading.Thread(target=outage)
        t.start()
        while t.is_alive():
            results += send(node.port, [fresh(base, study, "PGRESTART") for _ in range(5)])
            time.sleep(0.1)
        t.join()
        results += send(node.port, [fresh(base, study, "PGRESTART") for _ in range(10)])
        restarted = query("SELECT pg_postmaster_start_time()", pg_url=url) != before
        time.sleep(1)
        acked = [uid for uid, s in results if s == 0x0000]
        refused = [s for _, s in results if s != 0x0000]
        rows = {r[0] for r in query("SELECT sop_instance_uid FROM instances", pg_url=url)}
        lost = [u for u in acked if deid_uid(u) not in rows]
        check(restarted, f"postgres: stopped for 3 s and restarted during ingest ({len(results)} stores tried, {len(refused)} not acknowledged: {sorted(set(fmt(s) for s in refused))})")
        check(not lost, f"postgres: every acknowledged instance has its row ({len(acked)} acknowledged, {len(lost)} lost, {len(rows)} rows)")
        after = send(node.port, [fresh(base, study, "PGRESTART") for _ in range(5)])
        check(all(s == 0x0000 for _, s in after), "postgres: the node stores again after the restart (it reconnected)")
        check(node.alive(), "postgres: the node kept running")
        node.stop()
    finally:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start"], capture_output=True)
        for _ in range(50):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                break
            time.sleep(0.2)
        subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])


def sigkill(work, kills, seed):
    rng = random.Random(seed)
    models = os.path.join(work, "models")
    shutil.copytree(os.path.join(ROOT, "models", "demo-nodule"), os.path.join(models, "demo-nodule"))
    pacs_dir = os.path.join(work, "pacs")
    os.makedirs(pacs_dir)
    pacs_port = free_port()
    # Unique file names: a report received twice is two files.
    pacs = subprocess.Popen(["storescp", "+uf", "-od", pacs_dir, str(pacs_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data_dir = os.path.join(work, "data")
    node = Node(os.path.join(work, "node"), data_dir, models=models, destinations=["PACS"])
    node.cli("ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", str(pacs_port))
    cases = [dcmread(os.path.join(CASES, f)) for f in sorted(os.listdir(CASES))[:8]]
    acked = set()
    studies = set()
    cut_ingest = 0
    try:
        for k in range(kills):
            node.start()
            # One sender per round: a few one-image studies, the kill lands at a random point of
            # receiving, triaging or delivering.
            sets = []
            for _ in range(rng.randint(2, 5)):
                study = f"2.25.{uuid.uuid4().int}"
                for _ in range(rng.randint(1, 3)):
                    sets.append(fresh(rng.choice(cases), study, f"KILL{k:02d}"))
            out = []
            t = threading.Thread(target=lambda: out.extend(send(node.port, sets)))
            t.start()
            # Half the kills early (while the sender is sending), half later (triage, delivery).
            time.sleep(rng.uniform(0.0, 0.4) if k % 2 == 0 else rng.uniform(0.4, 3.0))
            node.kill9()
            t.join()
            if sum(1 for _, s in out if s == 0x0000) < len(sets):
                cut_ingest += 1
            for ds, (uid, s) in zip(sets, out):
                if s == 0x0000:
                    acked.add(uid)
                    studies.add(ds.StudyInstanceUID)
        # Let the last run finish everything.
        node.start()
        deadline = time.time() + 180
        while time.time() < deadline:
            out = node.cli("outbox", "list").stdout
            done = {r[0] for r in query("SELECT s.study_instance_uid FROM study_results r JOIN studies s ON s.id = r.study_id", data_dir=data_dir)}
            if all(deid_uid(u) in done for u in studies) and "pending" not in out and "sending" not in out:
                break
            time.sleep(1)
        node.stop()
    finally:
        pacs.terminate()
        node.kill9()
    rows = {r[0] for r in query("SELECT sop_instance_uid FROM instances", data_dir=data_dir)}
    lost = [u for u in acked if deid_uid(u) not in rows]
    check(len(acked) > 0, f"sigkill: {kills} kills ({cut_ingest} while the sender was still sending), {len(acked)} instances acknowledged in {len(studies)} studies")
    check(not lost, f"sigkill: 0 acknowledged instances lost ({len(lost)} of {len(acked)} missing)")
    triaged = {r[0] for r in query("SELECT s.study_instance_uid FROM study_results r JOIN studies s ON s.id = r.study_id", data_dir=data_dir)}
    no_result = [u for u in studies if deid_uid(u) not in triaged]
    check(not no_result, f"sigkill: 0 results lost ({len(studies) - len(no_result)} of {len(studies)} studies have their result)")
    reports = {}  # original Study Instance UID -> {SR SOP Instance UID: copies received}
    for f in os.listdir(pacs_dir):
        ds = dcmread(os.path.join(pacs_dir, f), stop_before_pixels=True)
        if ds.SOPClassUID.startswith("1.2.840.10008.5.1.4.1.1.88."):
            copies = reports.setdefault(ds.StudyInstanceUID, {})
            copies[ds.SOPInstanceUID] = copies.get(ds.SOPInstanceUID, 0) + 1
    missing = [u for u in studies if u not in reports]
    two_reports = [u for u, c in reports.items() if len(c) > 1]
    resent = sum(n - 1 for c in reports.values() for n in c.values())
    check(not missing, f"sigkill: every result's report reached the PACS ({len(studies) - len(missing)} of {len(studies)} studies)")
    check(not two_reports, f"sigkill: no study got two different reports ({len(two_reports)} did)")
    print(f"INFO sigkill: reports received a second time after a kill between the PACS's Success and the outbox's record: {resent} (with the same SOP Instance UID, so the PACS keeps one)", flush=True)


def sigkill_concurrent(work, kills, seed, senders=6):
    """Group commit under SIGKILL: several associations store at once (their rows share
    transactions), the node is killed at a random point, `kills` times. Every acknowledged
    instance must have its row and its store file, every row's file must be whole (the size the
    row recorded), and files without a row (cut off between file and commit, never
    acknowledged) end in quarantine at the next start."""
    rng = random.Random(seed)
    data_dir = os.path.join(work, "data")
    node = Node(os.path.join(work, "node"), data_dir)
    cases = [dcmread(os.path.join(CASES, f)) for f in sorted(os.listdir(CASES))[:8]]
    acked, sent = set(), 0
    for k in range(kills):
        node.start()
        outs = [[] for _ in range(senders)]
        threads = []
        for i in range(senders):
            study = f"2.25.{uuid.uuid4().int}"
            sets = [fresh(rng.choice(cases), study, f"GC{k:02d}{i:02d}") for _ in range(rng.randint(5, 25))]
            sent += len(sets)
            threads.append(threading.Thread(target=lambda o=outs[i], s=sets: o.extend(send(node.port, s))))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.1, 1.5))
        node.kill9()
        for t in threads:
            t.join()
        acked |= {uid for o in outs for uid, s in o if s == 0x0000}
    node.start()  # start-up moves unrecorded files to quarantine
    node.stop()
    rows = query("SELECT sop_instance_uid, path, size_bytes FROM instances", data_dir=data_dir)
    uids = {r[0] for r in rows}
    lost = [u for u in acked if deid_uid(u) not in uids]
    broken = [r[1] for r in rows if not os.path.isfile(os.path.join(data_dir, r[1])) or os.path.getsize(os.path.join(data_dir, r[1])) != int(r[2])]
    quarantined = sum(len(fs) for _, _, fs in os.walk(os.path.join(data_dir, "quarantine")))
    store = sum(len(fs) for _, _, fs in os.walk(os.path.join(data_dir, "store")))
    check(len(acked) > 0, f"sigkill-concurrent: {kills} kills of {senders} senders at once, {sent} instances sent, {len(acked)} acknowledged, {len(rows)} recorded")
    check(not lost, f"sigkill-concurrent: 0 acknowledged instances lost ({len(lost)} of {len(acked)} missing)")
    check(not broken, f"sigkill-concurrent: every row's store file is there and whole ({len(broken)} of {len(rows)} are not)")
    check(store == len(rows), f"sigkill-concurrent: store and database agree after the restart ({store} files, {len(rows)} rows; {quarantined} unrecorded files in quarantine)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tests", nargs="*", default=["disk-full", "postgres", "sigkill", "sigkill-concurrent"])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=15)
    args = p.parse_args()
    for t in args.tests:
        work = tempfile.mkdtemp(prefix=f"faults-{t}-")
        print(f"== {t} ({work})", flush=True)
        {
            "disk-full": disk_full,
            "postgres": postgres,
            "sigkill": lambda w: sigkill(w, args.kills, args.seed),
            "sigkill-concurrent": lambda w: sigkill_concurrent(w, args.kills, args.seed),
        }[t](work)
    print(f"{len(failures)} failed" if failures else "all passed", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
