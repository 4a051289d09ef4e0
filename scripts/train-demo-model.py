#!/usr/bin/env python3
"""Train the demonstration model shipped in models/demo-nodule/ (CPU, a few minutes, seeded).

DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED. It learns to find synthetic, nodule-like round
opacities composited onto one real adult chest radiograph (pydicom-data RG1, a CR in
MONOCHROME1), varied by size, crop, flip, contrast and noise. It knows nothing about real
nodules; it exists so the node's whole path (routing, preprocessing, inference, heatmaps,
results) runs on real DICOM without patient data.

    train-demo-model.py train OUT_DIR            writes model.pt (TorchScript) + metrics.json
    train-demo-model.py cases OUT_DIR N          writes N labelled DICOM cases + labels.csv
    train-demo-model.py model-input FILE OUT     writes the model input of FILE (f32 LE), as
                                                 the training pipeline computes it
    train-demo-model.py reference PACKAGE_DIR    writes reference.json: the package's model.pt
                                                 scores on the validation images (training
                                                 writes it too), the distribution the node's
                                                 drift check compares live scores with

The preprocessing here is the node's, step for step (model.toml: CR window "file", MONOCHROME1
inverted, bilinear resize with pixel centres aligned and no antialiasing, 128x128): the tests
compare this script's model input with the node's on the same file.
"""
import csv
import json
import math
import os
import sys
import time

import numpy as np
import pydicom
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut

SIZE = 128
SEED = 20261128


def source_path():
    import data_store

    return os.path.join(os.path.dirname(data_store.__file__), "data", "RG1_UNCR.dcm")


# ---- the node's preprocessing, in numpy/torch ------------------------------------------------

def window_linear(x, center, width):
    """PS3.3 C.11.2.1.2.1, mapped to 0..1 (as src/inference/preprocess.rs)."""
    width = max(width, 1.0)
    lower = center - 0.5 - (width - 1.0) / 2.0
    upper = center - 0.5 + (width - 1.0) / 2.0
    y = (x - (center - 0.5)) / max(width - 1.0, np.finfo(np.float64).tiny) + 0.5
    y = np.where(x <= lower, 0.0, np.where(x > upper, 1.0, y))
    return y


def percentile_window(x, lo=0.5, hi=99.5):
    v = np.sort(x.ravel())
    last = len(v) - 1
    a, b = float(v[int(round(lo / 100 * last))]), float(v[int(round(hi / 100 * last))])
    return (a + b) / 2 + 0.5, max(b - a, 1.0) + 1.0


def display(raw, ds):
    """Modality-LUT values -> 0..1 MONOCHROME2, with the file's first window (else percentiles)."""
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    if wc is not None and ww is not None:
        first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)
        c, w = first(wc), first(ww)
    else:
        c, w = percentile_window(raw)
    y = window_linear(raw.astype(np.float64), c, w)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1.0 - y
    return y.astype(np.float32)


def resize(plane, size=SIZE):
    t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0, 0].numpy()


def model_input(path):
    ds = pydicom.dcmread(path)
    raw = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    return resize(display(raw, ds))


# ---- synthetic cases -----------------------------------------------------------------------

class Source:
    """The real radiograph, its Modality-LUT values, and where its lungs are."""

    def __init__(self):
        self.ds = pydicom.dcmread(source_path())
        full = apply_modality_lut(self.ds.pixel_array, self.ds).astype(np.float32)
        # Crops and detector sizes are drawn from a 1024-row copy (antialiased), for speed.
        self.raw = rescale(full, 1024, int(round(1024 * full.shape[1] / full.shape[0])))
        small = resize(display(self.raw, self.ds), 64)
        # Lung fields: darker than the median of the central region, away from the edges.
        rows, cols = np.mgrid[0:64, 0:64]
        central = (rows > 10) & (rows < 52) & (cols > 8) & (cols < 56)
        self.lung = central & (small < np.median(small[central]))


def rescale(raw, rows, cols):
    t = torch.from_numpy(raw)[None, None]
    return F.interpolate(t, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def make_case(src, rng, positive, rows=None):
    """A radiograph at a random detector size, crop and flip, with or without one nodule,
    in the source's raw (Modality LUT) units. Returns (raw, nodule centre or None)."""
    r0, c0 = src.raw.shape
    scale = rng.uniform(0.82, 1.0)
    h, w = int(r0 * scale), int(c0 * scale)
    top, left = rng.integers(0, r0 - h + 1), rng.integers(0, c0 - w + 1)
    crop = src.raw[top:top + h, left:left + w]
    rows = rows or int(rng.integers(384, 640))
    cols = int(round(rows * w / h))
    img = rescale(np.ascontiguousarray(crop), rows, cols)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
    # Exposure and contrast differences, and detector noise (raw units; window width 30000).
    img = (img - img.mean()) * rng.uniform(0.85, 1.15) + img.mean() + rng.normal(0, 600)
    img += rng.normal(0, rng.uniform(100, 400), img.shape)
    centre = None
    if positive:
        lung = np.argwhere(src.lung)
        y, x = lung[rng.integers(len(lung))]
        cy, cx = (y + rng.uniform()) / 64 * rows, (x + rng.uniform()) / 64 * cols
        radius = rng.uniform(0.035, 0.07) * cols
        ry, rx = radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.8, 1.2)
        yy, xx = np.mgrid[0:rows, 0:cols]
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        profile = np.clip(1 - d ** 2, 0, None) ** 0.5
        # Denser than lung: lower raw values in MONOCHROME1.
        img -= rng.uniform(4000, 9000) * profile
        centre = (cy / rows, cx / cols)
    return np.clip(img, 0, 32767), centre


def dataset(src, n, seed):
    rng = np.random.default_rng(seed)
    xs, ys = np.zeros((n, 1, SIZE, SIZE), np.float32), np.zeros((n, 1), np.float32)
    for i in range(n):
        positive = i % 2 == 0
        raw, _ = make_case(src, rng, positive)
        xs[i, 0] = resize(display(raw, src.ds))
        ys[i, 0] = float(positive)
    return torch.from_numpy(xs), torch.from_numpy(ys)


# ---- the model -----------------------------------------------------------------------------

class NoduleNet(nn.Module):
    """Four conv blocks to a 16x16 grid, a 1x1 classifier per cell (the class activation map),
    log-sum-exp pooling of the cell logits to one logit per image."""

    def __init__(self):
        super().__init__()

        def block(i, o, pool):
            layers = [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            return nn.Sequential(*(layers + ([nn.MaxPool2d(2)] if pool else [])))

        self.features = nn.Sequential(block(1, 16, True), block(16, 32, True), block(32, 48, True), block(48, 64, False))
        self.classifier = nn.Conv2d(64, 1, 1)
        self.r = 4.0

    def forward(self, x):
        cells = self.classifier(self.features(x))  # [N, 1, 16, 16] logits
        flat = cells.flatten(2)
        pooled = (torch.logsumexp(self.r * flat, dim=2) - math.log(flat.shape[2])) / self.r
        return torch.sigmoid(pooled), torch.sigmoid(cells)


def auc(scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))


def fit(net, xtr, ytr, xva, yva, epochs, seed, started, what="validation AUC"):
    """Adam, batches of 32, binary cross-entropy; returns the validation probabilities."""
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            p, _ = net(xtr[idx])
            loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            pv = torch.cat([net(xva[i:i + 100])[0] for i in range(0, len(xva), 100)])[:, 0].numpy()
        print(f"epoch {epoch + 1}: loss {total / len(xtr):.4f}, {what} {auc(pv, yva[:, 0].numpy()):.4f} ({time.time() - started:.0f}s)", flush=True)
    return pv


def train(out_dir):
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    src = Source()
    xtr, ytr = dataset(src, 2400, SEED)
    xva, yva = dataset(src, 400, SEED + 1)
    print(f"data: {len(xtr)} training and {len(xva)} validation images in {time.time() - started:.0f}s", flush=True)
    net = NoduleNet()
    epochs = 8
    pv = fit(net, xtr, ytr, xva, yva, epochs, SEED, started)
    # The operating point: the threshold (step 0.05) maximising sensitivity + specificity on
    # the validation images; model.toml's `positive` threshold is set from it.
    truth = yva[:, 0].numpy() == 1
    def j(t):
        return (pv[truth] >= t).mean() + (pv[~truth] < t).mean()
    threshold = max((round(0.05 * k, 2) for k in range(1, 20)), key=j)
    net.eval()
    os.makedirs(out_dir, exist_ok=True)
    scripted = torch.jit.trace(net, torch.zeros(1, 1, SIZE, SIZE))
    scripted.save(os.path.join(out_dir, "model.pt"))
    metrics = {
        "validation_auc": round(auc(pv, yva[:, 0].numpy()), 4),
        "validation_images": len(xva),
        "training_images": len(xtr),
        "epochs": epochs,
        "suggested_positive_threshold": threshold,
        "sensitivity_at_threshold": round(float((pv[truth] >= threshold).mean()), 4),
        "specificity_at_threshold": round(float((pv[~truth] < threshold).mean()), 4),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "seed": SEED,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    write_reference(out_dir, {"nodule": pv}, "validation images (one per study)", len(xva))
    print(json.dumps(metrics))


def write_reference(out_dir, scores, source, n):
    """reference.json: per label, the study-level scores of the validation set (what the node
    stores as a finding's probability), for the node's drift check (PSI, models/README.md)."""
    doc = {"source": source, "studies": n, "scores": {label: [round(float(p), 5) for p in ps] for label, ps in scores.items()}}
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")


def reference(package_dir):
    """The shipped model's scores on the validation images, without training again."""
    torch.set_num_threads(2)
    xva, _ = dataset(Source(), 400, SEED + 1)
    net = torch.jit.load(os.path.join(package_dir, "model.pt")).eval()
    with torch.no_grad():
        pv = torch.cat([net(xva[i:i + 100])[0] for i in range(0, len(xva), 100)])[:, 0].numpy()
    write_reference(package_dir, {"nodule": pv}, "validation images (one per study)", len(xva))


# ---- labelled DICOM cases ------------------------------------------------------------------

def cases(out_dir, n, seed=SEED + 2):
    """N labelled cases as DICOM CR files (one study each, fictitious demo patients), half with
    a nodule, and labels.csv (file,nodule)."""
    from pydicom.uid import generate_uid, ExplicitVRLittleEndian

    src = Source()
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "nodule"])
        for i in range(n):
            positive = i % 2 == 0
            raw, _ = make_case(src, rng, positive, rows=512)
            ds = src.ds.copy()
            ds.file_meta = src.ds.file_meta.copy()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.PatientName = f"DEMO^CASE{i:03d}"
            ds.PatientID = f"DEMO{i:03d}"
            ds.AccessionNumber = f"DEMOACC{i:03d}"
            ds.StudyDescription = "Demo chest radiograph (synthetic lesion study)"
            ds.BurnedInAnnotation = "NO"  # no text in these pixels, and the reader says so
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.Rows, ds.Columns = raw.shape
            slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
            stored = np.clip(np.round((raw - intercept) / slope), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16)
            ds.PixelData = stored.tobytes()
            name = f"case{i:03d}.dcm"
            ds.save_as(os.path.join(out_dir, name), enforce_file_format=True)
            w.writerow([name, int(positive)])


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "train" and len(sys.argv) == 3:
        train(sys.argv[2])
    elif cmd == "cases" and len(sys.argv) == 4:
        cases(sys.argv[2], int(sys.argv[3]))
    elif cmd == "model-input" and len(sys.argv) == 4:
        model_input(sys.argv[2]).astype("<f4").tofile(sys.argv[3])
    elif cmd == "reference" and len(sys.argv) == 3:
        reference(sys.argv[2])
    else:
        sys.exit(__doc__)
