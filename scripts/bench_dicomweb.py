"""Timing client of scripts/bench-dicomweb.sh: the same QIDO-RS and WADO-RS requests to
triage-node's DICOMweb and to Orthanc's DICOMweb plugin, interleaved (node, Orthanc, node, ...),
each target on its own kept-alive HTTP/1.1 connection (http.client, no client-side parsing
beyond reading the whole body).

    python bench_dicomweb.py time ROUNDS NODE_URL TOKEN ORTHANC_URL UIDS_FILE   the rows (JSON lines)

NODE_URL / ORTHANC_URL: the DICOMweb roots (http://127.0.0.1:PORT/dicomweb, .../dicom-web); TOKEN:
the node's reader token (Orthanc runs without authentication).
"""
import http.client
import json
import random
import statistics
import sys
import time
import urllib.parse


class Target:
    def __init__(self, root, token=None):
        u = urllib.parse.urlsplit(root)
        self.host, self.port, self.root = u.hostname, u.port, u.path.rstrip("/")
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def get(self, path, params=None, accept="application/dicom+json"):
        # '*' and '^' unescaped: Orthanc's DICOMweb plugin (1.7) does not percent-decode query
        # values (PatientName=BENCH%5EPATIENT0* matches nothing there); the node reads either.
        url = self.root + path + ("?" + urllib.parse.urlencode(params, safe="*^") if params else "")
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request("GET", url, headers=headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status not in (200, 204):
            raise SystemExit(f"GET {url}: {r.status} {body[:300]!r}")
        return r.status, body


def count(status, body):
    return 0 if status == 204 or not body.strip() else len(json.loads(body))


def parts(status, body):
    return body.count(b"Content-Type: application/dicom") if status == 200 else 0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def main():
    if sys.argv[1] != "time":
        sys.exit(f"unknown command {sys.argv[1]}")
    rounds, node_url, token, orthanc_url, uids_file = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    targets = {"triage-node": Target(node_url, token), "Orthanc": Target(orthanc_url)}
    uids = [l.strip() for l in open(uids_file) if l.strip()]
    n = len(uids)
    rng = random.Random(7)
    study = lambda **p: ("/studies", p, "application/dicom+json", count)
    kinds = {
        "QIDO-RS studies by StudyInstanceUID": lambda: study(StudyInstanceUID=rng.choice(uids)),
        "QIDO-RS studies by PatientID": lambda: study(PatientID=f"BENCH{rng.randrange(max(1, n // 2)):05d}"),
        "QIDO-RS studies by PatientName wildcard": lambda: study(PatientName=f"BENCH^PATIENT0{rng.randrange(max(1, n // 2000))}{rng.randrange(10)}{rng.randrange(10)}*"),
        "QIDO-RS studies, StudyDate range (7 days)": lambda: study(StudyDate=(lambda d: f"2024{d[0]:02d}{d[1]:02d}-2024{d[0]:02d}{d[1] + 6:02d}")((rng.randrange(1, 13), rng.randrange(1, 20)))),
        "WADO-RS retrieve one study": lambda: (f"/studies/{rng.choice(uids)}", None, 'multipart/related; type="application/dicom"', parts),
        "WADO-RS one study's metadata": lambda: (f"/studies/{rng.choice(uids)}/metadata", None, "application/dicom+json", count),
    }
    for kind, make in kinds.items():
        times = {t: [] for t in targets}
        got = {t: [] for t in targets}
        for _ in range(rounds):
            path, params, accept, measure = make()
            for name, t in targets.items():
                t0 = time.perf_counter()
                status, body = t.get(path, params, accept)
                times[name].append((time.perf_counter() - t0) * 1000)
                got[name].append(measure(status, body))
        row = {"query": kind, "rounds": rounds,
               "answers_equal": got["triage-node"] == got["Orthanc"],
               "matches_total": {t: sum(v) for t, v in got.items()}}
        for name, key in (("triage-node", "node"), ("Orthanc", "orthanc")):
            v = times[name]
            row[f"{key}_ms"] = round(statistics.median(v), 2)
            row[f"{key}_p10_p90"] = [round(pct(v, 0.1), 2), round(pct(v, 0.9), 2)]
        row["orthanc_over_node"] = round(row["orthanc_ms"] / row["node_ms"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
