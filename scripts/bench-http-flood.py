#!/usr/bin/env python3
"""Slowloris flood on the node's HTTP port (loopback only, bounded in count and time), and a
measurement of what it does to the node (not a test; tests/it/http.rs uses the `flood` command).

    bench-http-flood.py flood --port P [--connections N] [--seconds T] [--sources K]
        N connections to 127.0.0.1:P from 127.0.0.2..127.0.0.(K+1), each sending a partial
        request header and then one more header byte a second; a connection the server closes
        is opened again (at most N/5 a second). Prints `open <n>` once the first N were tried,
        and a summary line when T seconds are over. Stdlib only.

    bench-http-flood.py bench [--bin target/debug/triage-node] [--connections 2000] [--seconds 40]
                              [--nofile 0] [--file .testdata/ts/ct_explicit_le.dcm]
        Starts the node (its own temp dir, demo keys, no model), registers STORESCU, times a
        C-STORE (DCMTK storescu) without a flood, then floods the HTTP port and reports the
        node's descriptors in use (/proc/<pid>/fd: before, peak during the flood) and the time
        and outcome of a C-STORE under the flood. --nofile L lowers the node's descriptor limit
        (soft and hard) to L once it runs, as a smaller host would have it. JSON on stdout.
"""
import argparse
import errno
import json
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HEAD = b"GET / HTTP/1.1\r\nHost: flood\r\nX-Slow: "


def flood(port, n, seconds, sources):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256 if hard == resource.RLIM_INFINITY else min(hard, n + 256), hard))
    began = time.monotonic()
    deadline = began + seconds
    sel = selectors.DefaultSelector()
    pending = {}  # socket -> when its connect began (non-blocking)
    established = []
    stats = {"opened": 0, "failed": 0, "closed_by_server": 0}
    counter = [0]

    def start():
        counter[0] += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((f"127.0.0.{2 + counter[0] % sources}", 0))
            rc = s.connect_ex(("127.0.0.1", port))
        except OSError:
            rc = -1
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            stats["failed"] += 1
            return
        pending[s] = time.monotonic()
        sel.register(s, selectors.EVENT_WRITE)

    for _ in range(n):
        start()
    announced = False
    next_trickle = began + 1
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1) if pending else []:
            s = key.fileobj
            sel.unregister(s)
            del pending[s]
            try:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    raise OSError("connect failed")
                s.send(HEAD)
                established.append(s)
                stats["opened"] += 1
            except OSError:
                s.close()
                stats["failed"] += 1
        now = time.monotonic()
        for s, t in list(pending.items()):
            if now - t > 3:  # the server's accept queue is full: SYNs dropped
                sel.unregister(s)
                del pending[s]
                s.close()
                stats["failed"] += 1
        if not announced and (not pending or now - began > 10):
            print("open", len(established), flush=True)
            announced = True
        if not pending:
            time.sleep(0.1)
        if now < next_trickle:
            continue
        next_trickle = now + 1
        # The trickle: one more header byte on every connection; one the server closed or
        # answered (503, 408) is dropped and opened again (at most n/5 a second).
        alive = []
        for s in established:
            ok = True
            try:
                s.recv(4096)  # EOF or an answer: the server is done with it
                ok = False
            except BlockingIOError:
                pass
            except OSError:
                ok = False
            if ok:
                try:
                    s.send(b"a")
                except BlockingIOError:
                    pass
                except OSError:
                    ok = False
            if ok:
                alive.append(s)
            else:
                stats["closed_by_server"] += 1
                s.close()
        established = alive
        for _ in range(min(n - len(established) - len(pending), max(1, n // 5))):
            start()
    if not announced:
        print("open", len(established), flush=True)
    stats["open_at_end"] = len(established)
    try:
        print(json.dumps(stats), flush=True)
    except BrokenPipeError:
        pass


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def storescu(port, file):
    t0 = time.monotonic()
    out = subprocess.run(["storescu", "-v", "-R", "-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", str(port), file],
                         capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=120)
    ok = out.returncode == 0 and "Received Store Response (Success)" in (out.stdout + out.stderr)
    return ok, round(time.monotonic() - t0, 3)


def bench(args):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(repo, args.bin)
    file = os.path.join(repo, args.file)
    work = tempfile.mkdtemp(prefix="bench-http-flood-")
    config = os.path.join(work, "node.toml")
    with open(config, "w") as f:
        f.write(f'[dicom]\nbind = "127.0.0.1"\nport = 0\n[storage]\ndata_dir = "{work}/data"\nmin_free_disk = "0"\n'
                f'[deid]\ndemo_keys = true\n[inference]\ndevice = "cpu"\nmodels_dir = "{work}/no-models"\n'
                f'[http]\nport = 0\n[log]\nlevel = "info"\n')
    subprocess.run([binary, "--config", config, "ae", "add", "STORESCU"], check=True, capture_output=True)
    log = open(os.path.join(work, "node.log"), "w+")
    node = subprocess.Popen([binary, "--config", config, "serve"], stderr=log, stdout=subprocess.DEVNULL)
    try:
        dicom = http = None
        for _ in range(300):
            log.seek(0)
            text = log.read()
            m, h = re.search(r"listening port=(\d+)", text), re.search(r"http_port=(\d+)", text)
            if m and h:
                dicom, http = int(m[1]), int(h[1])
                break
            time.sleep(0.1)
        if dicom is None:
            sys.exit("the node did not start:\n" + text)
        if args.nofile:
            subprocess.run(["prlimit", "--pid", str(node.pid), f"--nofile={args.nofile}:{args.nofile}"], check=True)
        limit = open(f"/proc/{node.pid}/limits").read()
        nofile = re.search(r"Max open files\s+(\d+)\s+(\d+)", limit)
        result = {"binary": binary, "connections": args.connections, "node_nofile_soft": int(nofile[1]), "node_nofile_hard": int(nofile[2])}
        result["cstore_ok_no_flood"], result["cstore_seconds_no_flood"] = storescu(dicom, file)
        result["fds_before_flood"] = fds(node.pid)
        flooder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "flood", "--port", str(http), "--connections",
                                    str(args.connections), "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], fds(node.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        first = flooder.stdout.readline().split()
        result["flood_opened"] = int(first[1]) if len(first) == 2 else None
        time.sleep(2)
        result["fds_during_flood"] = fds(node.pid)
        result["cstore_ok_under_flood"], result["cstore_seconds_under_flood"] = storescu(dicom, file)
        flooder.terminate()
        flooder.wait()
        done.set()
        sampler.join()
        result["fds_peak_during_flood"] = peak[0]
        log.seek(0)
        result["node_log_emfile"] = log.read().count("Too many open files")
        print(json.dumps(result, indent=1))
    finally:
        node.terminate()
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--connections", type=int, default=1000)
    f.add_argument("--seconds", type=float, default=30)
    f.add_argument("--sources", type=int, default=8)
    b = sub.add_parser("bench")
    b.add_argument("--bin", default="target/debug/triage-node")
    b.add_argument("--connections", type=int, default=2000)
    b.add_argument("--seconds", type=float, default=40)
    b.add_argument("--nofile", type=int, default=0)
    b.add_argument("--file", default=".testdata/ts/ct_explicit_le.dcm")
    a = p.parse_args()
    if a.cmd == "flood":
        if not 1 <= a.connections <= 20000 or not 0 < a.seconds <= 600 or not 1 <= a.sources <= 250:
            sys.exit("bounded: 1-20000 connections, at most 600 s, 1-250 sources")
        flood(a.port, a.connections, a.seconds, a.sources)
    else:
        bench(a)


if __name__ == "__main__":
    main()
