"""Serve OHIF's prebuilt viewer and Orthanc's DICOMweb on one origin, and drive headless Chromium
through it (scripts/viewer-check.sh; not part of the test suite).

    python viewer_drive.py serve PORT OHIF_DIST ORTHANC_HTTP_PORT
        /              OHIF's dist (unknown paths: index.html, the viewer is a single-page app)
        /app-config.js a config whose only data source is this origin's /dicom-web
        /dicom-web/*   Orthanc's DICOMweb plugin (same origin: no CORS)
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


def serve(port, dist, orthanc):
    dist = os.path.abspath(dist)

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
                root = f"http://{self.headers.get('Host', f'127.0.0.1:{port}')}/dicom-web"
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
            if self.path.startswith("/dicom-web/") or self.path.startswith("/wado"):
                self.proxy()
            else:
                self.static()

        do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = handle_any

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


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

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))
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
    elif cmd == "shoot":
        shoot(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(f"unknown command {cmd}")


def shoot(base, out, studies):
    raise NotImplementedError


if __name__ == "__main__":
    main()
