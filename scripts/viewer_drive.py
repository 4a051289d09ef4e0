"""Serve OHIF's prebuilt viewer and Orthanc's DICOMweb on one origin, and drive headless Chromium
through it (scripts/viewer-check.sh; not part of the test suite).

    python viewer_drive.py serve PORT OHIF_DIST ORTHANC_HTTP_PORT
        /              OHIF's dist (unknown paths: index.html, the viewer is a single-page app)
        /app-config.js a config whose only data source is this origin's /dicom-web
        /dicom-web/*   Orthanc's DICOMweb plugin (same origin: no CORS)
    python viewer_drive.py serve-node PORT OHIF_DIST ORTHANC_HTTP_PORT NODE_HTTP_PORT
        (the node's reader token in the environment, VIEWER_NODE_TOKEN)
        /              OHIF's dist, as above
        /app-config.js a config whose only data source is this origin's /dicomweb
        /dicomweb/*    the node's DICOMweb (its AI results) and Orthanc's (the source images)
                       behind one root: searches go to both and their answers are merged
                       (studies by Study Instance UID: modalities and counts added up; series and
                       instances and study metadata listed from both); a series' requests go to
                       whichever holds it; the node's requests carry its bearer token, so OHIF
                       needs no auth. The node has no WADO-RS `frames` resource: a frame of one
                       of its objects is cut here from the instance it retrieves (pydicom).
    python viewer_drive.py shoot VIEWER_URL OUT_DIR STUDY_UID [STUDY_UID...]
        open each study in OHIF's viewer with chromedriver, show the Parametric Map and the SR
        and write PNG screenshots to OUT_DIR
"""
import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: false,
  defaultDataSourceName: 'orthanc',
  investigationalUseDialog: { option: 'never' },
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (triage-node viewer check)',
      name: 'orthanc',
      wadoUriRoot: '%(root)s',
      qidoRoot: '%(root)s',
      wadoRoot: '%(root)s',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      omitQuotationForMultipartRequest: true,
      bulkDataURI: { enabled: true },
    },
  }],
};
"""


def serve(port, dist, orthanc, node=None, token=None):
    """Without `node`: OHIF and Orthanc's DICOMweb at /dicom-web. With it: the merged /dicomweb."""
    dist = os.path.abspath(dist)
    root_path = "/dicomweb" if node else "/dicom-web"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("%s %s\n" % (self.command, fmt % args))

        def send(self, code, body, ctype, extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def proxy(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            req = urllib.request.Request(f"http://127.0.0.1:{orthanc}{self.path}", data=body, method=self.command)
            for k in ("Accept", "Content-Type", "Range"):
                if self.headers.get(k):
                    req.add_header(k, self.headers[k])
            # Orthanc writes BulkDataURIs with the host the request names: this origin.
            req.add_header("Host", self.headers.get("Host", f"127.0.0.1:{port}"))
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    code, data, headers = r.status, r.read(), r.headers
            except urllib.error.HTTPError as e:
                code, data, headers = e.code, e.read(), e.headers
            self.send(code, data, headers.get("Content-Type", "application/octet-stream"))

        def static(self):
            path = self.path.split("?", 1)[0]
            if path == "/app-config.js":
                root = f"http://{self.headers.get('Host', f'127.0.0.1:{port}')}{root_path}"
                return self.send(200, (APP_CONFIG % {"root": root}).encode(), "application/javascript")
            file = os.path.normpath(os.path.join(dist, path.lstrip("/")))
            if not file.startswith(dist) or not os.path.isfile(file):
                file = os.path.join(dist, "index.html")
            ext = os.path.splitext(file)[1]
            ctype = {".js": "application/javascript", ".css": "text/css", ".html": "text/html", ".wasm": "application/wasm",
                     ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
                     ".woff2": "font/woff2"}.get(ext, "application/octet-stream")
            with open(file, "rb") as f:
                self.send(200, f.read(), ctype)

        def handle_any(self):
            if node and (self.path == "/dicomweb" or self.path.startswith("/dicomweb/") or self.path.startswith("/dicomweb?")):
                try:
                    code, data, ctype = merged.request(self.command, self.path[len("/dicomweb"):], self.headers)
                except Exception as e:  # a backend down or an answer not understood: say so, keep serving
                    sys.stderr.write(f"merge error {self.path}: {e!r}\n")
                    code, data, ctype = 502, f"viewer proxy: {e!r}".encode(), "text/plain"
                self.send(code, data, ctype)
            elif self.path.startswith("/dicom-web/") or self.path.startswith("/wado"):
                self.proxy()
            else:
                self.static()

        do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = handle_any

    merged = Merged(orthanc, node, token) if node else None
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Merged:
    """The node's DICOMweb (AI results) and Orthanc's (the source images) as one DICOMweb root."""

    def __init__(self, orthanc, node, token):
        self.orthanc, self.node, self.token = orthanc, node, token
        self.holder = {}  # Series Instance UID -> "node" | "orthanc", learnt from the answers

    def fetch(self, who, method, rest, headers):
        if who == "node":
            url = f"http://127.0.0.1:{self.node}/dicomweb{rest}"
        else:
            url = f"http://127.0.0.1:{self.orthanc}/dicom-web{rest}"
        req = urllib.request.Request(url, method=method)
        for k in ("Accept", "Range"):
            if headers.get(k):
                req.add_header(k, headers[k])
        if who == "node":
            req.add_header("Authorization", f"Bearer {self.token}")
        else:  # Orthanc writes BulkDataURIs with the host the request names: this origin.
            req.add_header("Host", headers.get("Host", "127.0.0.1"))
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                code, data, h = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            code, data, h = e.code, e.read(), e.headers
        ctype = h.get("Content-Type", "application/octet-stream")
        if code >= 400:
            sys.stderr.write(f"{who} {method} {rest} -> {code} {data[:300]!r}\n")
        return code, data, ctype

    def json_list(self, who, rest, headers):
        code, data, _ = self.fetch(who, "GET", rest, headers)
        if code == 204 or (code == 200 and not data.strip()):
            return []
        if code != 200:
            return []  # logged by fetch; the other side's answer still counts
        return json.loads(data)

    def both(self, rest, headers):
        return self.json_list("node", rest, headers), self.json_list("orthanc", rest, headers)

    def learn(self, who, items):
        for it in items:
            uid = (it.get("0020000E", {}).get("Value") or [None])[0]
            if uid:
                self.holder.setdefault(uid, who)

    def request(self, method, rest, headers):
        path, _, query = rest.partition("?")
        seg = [s for s in path.split("/") if s]
        as_json = lambda items: (200, json.dumps(items).encode(), "application/dicom+json")
        if method not in ("GET", "HEAD"):
            return 405, b"viewer proxy: read only", "text/plain"
        if seg == ["studies"]:
            node, orth = self.both(rest, headers)
            studies = {}
            for it in orth + node:
                uid = it["0020000D"]["Value"][0]
                if uid not in studies:
                    studies[uid] = it
                    continue
                have = studies[uid]
                mods = have.get("00080061", {}).get("Value", []) + it.get("00080061", {}).get("Value", [])
                have["00080061"] = {"vr": "CS", "Value": sorted(set(mods))}
                for tag in ("00201206", "00201208"):
                    if tag in it and "Value" in it[tag]:
                        n = (have.get(tag, {}).get("Value") or [0])[0] + it[tag]["Value"][0]
                        have[tag] = {"vr": "IS", "Value": [n]}
            return as_json(list(studies.values()))
        if len(seg) == 3 and seg[0] == "studies" and seg[2] in ("series", "instances", "metadata"):
            node, orth = self.both(rest, headers)
            self.learn("node", node)
            self.learn("orthanc", orth)
            seen, out = set(), []
            for it in node + orth:
                key = (it.get("00080018") or it.get("0020000E") or {}).get("Value", [None])[0]
                if key not in seen:
                    seen.add(key)
                    out.append(it)
            return as_json(out)
        if len(seg) >= 4 and seg[0] == "studies" and seg[2] == "series":
            who = self.holder.get(seg[3])
            if who is None:
                code, _, _ = self.fetch("node", "GET", f"/studies/{seg[1]}/series/{seg[3]}/metadata", headers)
                who = self.holder[seg[3]] = "node" if code == 200 else "orthanc"
            if who == "node" and len(seg) == 8 and seg[6] == "frames":
                return self.node_frames(seg, headers)
            return self.fetch(who, method, rest, headers)
        # A search across studies below the study level, a whole study's retrieve: Orthanc's
        # answer (the source images), the node's search added where it is JSON.
        if seg in (["series"], ["instances"]):
            node, orth = self.both(rest, headers)
            return as_json(orth + node)
        return self.fetch("orthanc", method, rest, headers)

    def node_frames(self, seg, headers):
        """WADO-RS frames of a node object: the instance retrieved, the frames cut from it."""
        import io
        import pydicom
        rest = "/" + "/".join(seg[:6])
        code, data, ctype = self.fetch("node", "GET", rest, {"Accept": 'multipart/related; type="application/dicom"'})
        if code != 200:
            return code, data, ctype
        boundary = [p.split("=", 1)[1].strip('"') for p in ctype.split(";") if p.strip().startswith("boundary=")][0].encode()
        part = data.split(b"--" + boundary)[1]
        body = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        ds = pydicom.dcmread(io.BytesIO(body))
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        wanted = [int(n) for n in seg[7].split(",")]
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_compressed:
            pieces = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=frames))
            frame_type = f'application/octet-stream; transfer-syntax={ts}'
        else:
            raw = ds.PixelData
            size = len(raw) // frames
            pieces = [raw[i * size:(i + 1) * size] for i in range(frames)]
            frame_type = "application/octet-stream"
        b = "viewerproxyframes"
        out = b""
        for n in wanted:
            out += f"--{b}\r\nContent-Type: {frame_type}\r\n\r\n".encode() + pieces[n - 1] + b"\r\n"
        out += f"--{b}--\r\n".encode()
        return 200, out, f'multipart/related; type="application/octet-stream"; boundary={b}'


class Driver:
    def __init__(self, width=1600, height=1000):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.profile = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/status", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                                                 "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                                                     "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                                     "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                                                     f"--window-size={width},{height}", f"--user-data-dir={self.profile.name}"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.read()[:500]!r}")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def until(self, what, script, timeout=60):
        deadline = time.time() + timeout
        while True:
            v = self.js(script)
            if v:
                return v
            if time.time() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; page text: {self.js('return document.body.innerText')[:2000]}")
            time.sleep(0.5)

    def screenshot(self, path, quiet=False):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))
        if not quiet:
            print("screenshot:", path, flush=True)

    def logs(self):
        try:
            return self.s("POST", "/se/log", {"type": "browser"})
        except RuntimeError:
            return []

    def close(self):
        try:
            self.s("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait()
            self.profile.cleanup()


def main():
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif cmd == "serve-node":
        serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), os.environ["VIEWER_NODE_TOKEN"])
    elif cmd == "diagnose":
        diagnose(int(sys.argv[2]), sys.argv[3])
    elif cmd == "shoot":
        shoot(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(f"unknown command {cmd}")


def diagnose(orthanc, study):
    """Store two DIAGNOSTIC copies of the node's objects in the PACS, to tell OHIF's limits from
    the node's content: the Parametric Map with one frame per slice of its source series (the
    node's frame on the key slice, zeros elsewhere; OHIF 3.13.2 sizes the overlay by the map's
    frame count and indexes it by the source slice's position), and the SR with only its
    measurement groups that have an image region (OHIF 3.13.2 fails on a group without one)."""
    import copy
    import numpy as np
    import pydicom

    def rest(path, data=None):
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{orthanc}{path}", data=data), timeout=60) as r:
            return r.read()

    objs = {}
    for inst in json.loads(rest("/tools/find", json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study}}).encode())):
        ds = pydicom.dcmread(__import__("io").BytesIO(rest(f"/instances/{inst}/file")))
        objs.setdefault(ds.SOPClassUID, []).append(ds)
    pm = objs["1.2.840.10008.5.1.4.1.1.30"][0]
    frame = pm.PerFrameFunctionalGroupsSequence[0]
    key = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    source = [ds for ds in sum(objs.values(), []) if key in [x.SOPInstanceUID for x in [ds]]][0]
    stack = sorted((ds for ds in objs[source.SOPClassUID] if ds.SeriesInstanceUID == source.SeriesInstanceUID),
                   key=lambda ds: float(ds.ImagePositionPatient[2]))
    pixels = np.frombuffer(pm.FloatPixelData, dtype="<f4").reshape(int(pm.NumberOfFrames), pm.Rows, pm.Columns)[0]
    items, data = [], []
    for n, ds in enumerate(stack):
        it = copy.deepcopy(frame)
        it.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = ds.SOPInstanceUID
        it.FrameContentSequence[0].InStackPositionNumber = n + 1
        it.FrameContentSequence[0].DimensionIndexValues = [1, n + 1]
        it.PlanePositionSequence[0].ImagePositionPatient = ds.ImagePositionPatient
        items.append(it)
        data.append(pixels if ds.SOPInstanceUID == key else np.zeros_like(pixels))
    pm.PerFrameFunctionalGroupsSequence = pydicom.Sequence(items)
    pm.NumberOfFrames = len(items)
    pm.FloatPixelData = np.stack(data).astype("<f4").tobytes()
    sr = objs["1.2.840.10008.5.1.4.1.1.88.34"][0]
    im = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"][0]
    im.ContentSequence = pydicom.Sequence([g for g in im.ContentSequence if any(c.ValueType in ("SCOORD", "SCOORD3D") for c in g.ContentSequence)])
    for ds, desc, number in ((pm, f"DIAGNOSTIC {len(items)}-frame copy of AI map", 9950), (sr, "DIAGNOSTIC SR copy, region groups only", 9951)):
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesDescription, ds.SeriesNumber = desc, number
        buf = __import__("io").BytesIO()
        ds.save_as(buf)
        rest("/instances", buf.getvalue())
        print(f"stored {desc}")
    print(f"key slice {[d.SOPInstanceUID for d in stack].index(key) + 1} of {len(stack)} (by z)")


def coloured(png):
    """Pixels of the viewport area that are clearly coloured (an overlay), in a PNG screenshot."""
    from PIL import Image
    im = Image.open(png).convert("RGB")
    w, h = im.size
    return sum(1 for r, g, b in im.crop((300, 60, w - 40, h - 60)).getdata() if max(r, g, b) - min(r, g, b) > 60)


def open_study(d, base, study):
    d.go(f"{base}/viewer?StudyInstanceUIDs={study}")
    d.until("the study's series", "return document.querySelectorAll('[data-cy^=study-browser-thumbnail]').length > 0")
    time.sleep(6)
    d.js("[...document.querySelectorAll('button, span, div')].filter(e => e.innerText === 'Skip all').forEach(e => e.click())")


def load_series(d, text):
    """Double-click the series whose thumbnail text contains `text`; wait; return an error if the viewer shows one."""
    d.logs()
    found = d.js("const t = [...document.querySelectorAll('[data-cy^=study-browser-thumbnail]')].find(e => e.innerText.includes(arguments[0]));"
                 "if (!t) return false; t.dispatchEvent(new MouseEvent('dblclick', {bubbles: true})); return true", text)
    if not found:
        return f"no series {text!r}"
    time.sleep(12)
    for label in ("Yes",):   # "continue tracking measurements?" prompt of the SR
        d.js("[...document.querySelectorAll('button')].filter(e => e.innerText === arguments[0]).forEach(e => e.click())", label)
    time.sleep(2)
    errors = [l["message"] for l in d.logs() if "Error Boundary" in l["message"] or l["level"] == "SEVERE"]
    return errors[0][:400] if errors else None


def key(d, name, n=1):
    k = {"down": "\ue015", "up": "\ue013"}[name]
    acts = [a for _ in range(n) for a in ({"type": "keyDown", "value": k}, {"type": "keyUp", "value": k})]
    d.s("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": acts}]})
    time.sleep(1.5)


def to_most_coloured_slice(d, out, slices):
    """Step through a stack and stop on the slice that shows the most overlay."""
    key(d, "up", slices)
    tmp = os.path.join(out, ".probe.png")
    best, best_i = -1, 0
    for i in range(slices):
        d.screenshot(tmp, quiet=True)
        c = coloured(tmp)
        if c > best:
            best, best_i = c, i
        key(d, "down")
    os.remove(tmp)
    key(d, "up", slices)
    key(d, "down", best_i) if best_i else None
    return best


def shoot(base, out, studies):
    """studies: NAME=STUDY_UID[:SLICES]; writes NAME-study.png, NAME-sc.png, NAME-pmap.png, NAME-sr.png and, where the
    diagnostic copies exist (series descriptions starting DIAGNOSTIC), NAME-diagnostic-*.png."""
    d = Driver()
    summary = []
    try:
        for spec in studies:
            name, rest = spec.split("=", 1)
            study, _, slices = rest.partition(":")
            slices = int(slices or 1)
            open_study(d, base, study)
            d.screenshot(os.path.join(out, f"{name}-study.png"))
            series = d.js("return [...document.querySelectorAll('[data-cy^=study-browser-thumbnail]')].map(e => e.innerText.replace(/\\n/g, ' '))")
            summary.append(f"{name}: series in the viewer: {series}")
            for what, text, shot in (("the node's Secondary Capture", "AI heatmap", "sc"),
                                     ("the node's Parametric Map", "AI map", "pmap"), ("the node's SR", "AI triage report", "sr"),
                                     ("DIAGNOSTIC PM copy, one frame per slice", "-frame copy of AI map", "diagnostic-pmap"),
                                     ("DIAGNOSTIC SR copy, region groups only", "DIAGNOSTIC SR", "diagnostic-sr")):
                if not any(text in s for s in series):
                    continue
                open_study(d, base, study)
                err = load_series(d, text)
                path = os.path.join(out, f"{name}-{shot}.png")
                if not err and "pmap" in shot and slices > 1:
                    to_most_coloured_slice(d, out, slices)
                d.screenshot(path)
                c = coloured(path)
                summary.append(f"{name}: {what}: " + (f"VIEWER ERROR: {err}" if err else f"loaded, {c} coloured pixels in the viewport") + f" -> {path}")
    finally:
        d.close()
    print("== what OHIF showed")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
