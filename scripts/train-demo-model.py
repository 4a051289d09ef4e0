#!/usr/bin/env python3
"""Train the demonstration model shipped in models/demo-nodule/ (CPU, a few minutes, seeded).

DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED. It learns to find synthetic, nodule-like round
opacities composited onto one real adult chest radiograph (pydicom-data RG1, a CR in
MONOCHROME1), varied by size, crop, flip, contrast and noise. It knows nothing about real
nodules; it exists so the node's whole path (routing, preprocessing, inference, heatmaps,
results) runs on real DICOM without patient data.

    train-demo-model.py train OUT_DIR            writes model.pt (TorchScript) + metrics.json
    train-demo-model.py cases OUT_DIR N          writes N labelled DICOM cases + labels.csv (and
                                                 boxes.csv: each nodule's box)
    train-demo-model.py train-detector OUT_DIR   the demonstration detector (boxes, not a CAM):
                                                 model.onnx + twin.pt (the same network as
                                                 TorchScript) + model.toml + metrics.json +
                                                 reference.json (models/more/demo-nodule-detector)
    train-demo-model.py model-input FILE OUT     writes the model input of FILE (f32 LE), as
                                                 the training pipeline computes it
    train-demo-model.py reference PACKAGE_DIR    writes reference.json: the package's model.pt
                                                 scores on the validation images and their input
                                                 statistics (training writes it too), what the
                                                 node's drift check compares live studies with

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
    raw, centre, _ = make_case_with_box(src, rng, positive, rows)
    return raw, centre


def make_case_with_box(src, rng, positive, rows=None):
    """make_case, and the nodule's box (x0, y0, x1, y1: its ellipse's extent in the image's
    pixels, (0, 0) the top left corner of the top left pixel) or None."""
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
    centre, box = None, None
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
        # Pixel (i, j)'s centre is at (j + 0.5, i + 0.5) in corner coordinates.
        box = (cx + 0.5 - rx, cy + 0.5 - ry, cx + 0.5 + rx, cy + 0.5 + ry)
    return np.clip(img, 0, 32767), centre, box


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
    write_reference(out_dir, {"nodule": pv}, "validation images (one per study)", len(xva), input_stats(xva.numpy()))
    print(json.dumps(metrics))


def histogram(plane):
    """The node's input histogram (src/inference/preprocess.rs `histogram`): the shares of the
    first channel's windowed values (0..1, before mean/std) in ten bins of 0.1, 1.0 in the last."""
    v = np.asarray(plane, dtype=np.float32).ravel()
    v = v[np.isfinite(v)]
    bins = np.clip(np.floor(v * np.float32(10)), 0, 9).astype(np.int64)
    counts = np.bincount(bins, minlength=10)
    return [round(float(c) / max(len(v), 1), 5) for c in counts]


def input_stats(xs, pixel_spacing=None, slice_thickness=None):
    """reference.json's "inputs" from the validation studies' model inputs (N x C x H x W, one
    image per study): each study's histogram, and its Pixel Spacing and Slice Thickness where
    its DICOM would have one (the demo cases copy the source radiograph's 0\\0 spacing: none)."""
    return {
        "histogram": [histogram(x[0]) for x in np.asarray(xs)],
        "pixel_spacing": list(pixel_spacing or []),
        "slice_thickness": list(slice_thickness or []),
    }


def write_reference(out_dir, scores, source, n, inputs=None):
    """reference.json: per label, the study-level scores of the validation set (what the node
    stores as a finding's probability), and the validation studies' input statistics, for the
    node's drift check (PSI, models/README.md)."""
    doc = {"source": source, "studies": n, "scores": {label: [round(float(p), 5) for p in ps] for label, ps in scores.items()}}
    if inputs is not None:
        doc["inputs"] = inputs
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
    write_reference(package_dir, {"nodule": pv}, "validation images (one per study)", len(xva), input_stats(xva.numpy()))


# ---- the demonstration detector (models/more/demo-nodule-detector) ----------------------------

GRID = 16              # the detector's cells: 16 x 16 of 8 x 8 input pixels
STRIDE = SIZE // GRID
TOP_K = 5              # boxes per image (model.toml: boxes [N, 5, 4], scores [N, 5])
DETECTOR_SEED = 20261208


def detection_dataset(src, n, seed):
    """Like `dataset`, with each nodule's box in the model's input pixels (NaN on negatives)."""
    rng = np.random.default_rng(seed)
    xs, boxes = np.zeros((n, 1, SIZE, SIZE), np.float32), np.full((n, 4), np.nan, np.float32)
    for i in range(n):
        raw, _, box = make_case_with_box(src, rng, i % 2 == 0)
        xs[i, 0] = resize(display(raw, src.ds))
        if box is not None:
            rows, cols = raw.shape
            boxes[i] = [box[0] * SIZE / cols, box[1] * SIZE / rows, box[2] * SIZE / cols, box[3] * SIZE / rows]
    return torch.from_numpy(xs), torch.from_numpy(boxes)


class NoduleDetector(nn.Module):
    """CenterNet-style: NoduleNet's four conv blocks to the 16 x 16 grid, then per cell an
    objectness logit (a nodule's centre lies in the cell), the centre's offset in the cell and
    the box's log width and height (in cells). `forward` decodes inside the model: objectness
    probabilities, local maxima only (3 x 3), the TOP_K best cells and their boxes in input
    pixels; boxes [N, K, 4] (x0, y0, x1, y1) and scores [N, K], best first."""

    def __init__(self):
        super().__init__()
        self.features = NoduleNet().features
        self.head = nn.Sequential(nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 5, 1))
        nn.init.constant_(self.head[2].bias[:1], -4.0)  # start from "no nodule anywhere"

    def cells(self, x):
        return self.head(self.features(x))  # [N, 5, GRID, GRID]

    def forward(self, x):
        out = self.cells(x)
        heat = torch.sigmoid(out[:, 0:1])
        peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype)
        scores, index = peaks.flatten(1).topk(TOP_K, dim=1)  # [N, K]
        reg = out[:, 1:].flatten(2).gather(2, index.unsqueeze(1).expand(-1, 4, -1))  # [N, 4, K]
        col = (index % GRID).to(x.dtype)
        row = torch.div(index, GRID, rounding_mode="floor").to(x.dtype)
        cx = (col + torch.sigmoid(reg[:, 0])) * STRIDE
        cy = (row + torch.sigmoid(reg[:, 1])) * STRIDE
        half_w = torch.exp(reg[:, 2].clamp(-4.0, 3.0)) * (STRIDE / 2)
        half_h = torch.exp(reg[:, 3].clamp(-4.0, 3.0)) * (STRIDE / 2)
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2).clamp(0.0, float(SIZE))
        return boxes, scores


def detection_targets(boxes):
    """Per image: the Gaussian objectness target on the grid (1 at the centre's cell), the
    centre's cell index (-1 on negatives) and the regression target there."""
    n = len(boxes)
    heat = torch.zeros(n, GRID, GRID)
    cell = torch.full((n,), -1, dtype=torch.long)
    reg = torch.zeros(n, 4)
    centres = (torch.arange(GRID, dtype=torch.float32) + 0.5) * STRIDE
    for i, b in enumerate(boxes):
        if torch.isnan(b[0]):
            continue
        cx, cy = float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2
        w, h = float(b[2] - b[0]), float(b[3] - b[1])
        col, row = min(int(cx // STRIDE), GRID - 1), min(int(cy // STRIDE), GRID - 1)
        sigma = max(w, h) / 4
        heat[i] = torch.exp(-((centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2) / (2 * sigma ** 2))
        heat[i, row, col] = 1.0
        cell[i] = row * GRID + col
        reg[i] = torch.tensor([cx / STRIDE - col, cy / STRIDE - row, math.log(w / STRIDE), math.log(h / STRIDE)])
    return heat, cell, reg


def detection_loss(out, heat, cell, reg):
    """CenterNet's penalty-reduced focal loss on the objectness, L1 on the centre's offset and
    log size at the nodule's cell; normalised by the number of nodules."""
    logit = out[:, 0]
    p = torch.sigmoid(logit)
    pos = heat == 1.0
    focal_pos = -((1 - p) ** 2) * F.logsigmoid(logit)
    focal_neg = -((1 - heat) ** 4) * p ** 2 * F.logsigmoid(-logit)
    focal = torch.where(pos, focal_pos, focal_neg).sum()
    has = cell >= 0
    n_pos = max(int(has.sum()), 1)
    loss = focal / n_pos
    if has.any():
        picked = out[has, 1:].flatten(2).gather(2, cell[has].view(-1, 1, 1).expand(-1, 4, 1))[:, :, 0]
        offset = (torch.sigmoid(picked[:, :2]) - reg[has, :2]).abs().sum()
        size = (picked[:, 2:] - reg[has, 2:]).abs().sum()
        loss = loss + (offset + size) / n_pos
    return loss


def iou(a, b):
    """Intersection over union of boxes (x0, y0, x1, y1), broadcast."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def detections(net, xs):
    with torch.no_grad():
        outs = [net(xs[i:i + 100]) for i in range(0, len(xs), 100)]
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


def detection_figures(boxes, scores, truth, t):
    """At score threshold t: positives with a box >= t of IoU >= 0.3 (detection sensitivity),
    negatives without any box >= t (specificity), false boxes per image."""
    positive = ~np.isnan(truth[:, 0])
    overlap = iou(boxes, truth[:, None, :])  # [n, K]; NaN on negatives
    hit = ((scores >= t) & (overlap >= 0.3)).any(axis=1)
    false_boxes = ((scores >= t) & ~(overlap >= 0.3)).sum(axis=1)
    return {
        "sensitivity": float(hit[positive].mean()),
        "specificity": float(1 - (scores[~positive] >= t).any(axis=1).mean()),
        "false_boxes_per_image": float(false_boxes.mean()),
    }


def operating_points(boxes, scores, truth):
    """The figures at each threshold (step 0.05) on the validation images; `positive`: the
    threshold maximising detection sensitivity + specificity; `urgent`: the highest one that
    still finds half the nodules (the more conspicuous half)."""
    figures = {round(0.05 * k, 2): detection_figures(boxes, scores, truth, round(0.05 * k, 2)) for k in range(1, 20)}
    threshold = max(figures, key=lambda t: figures[t]["sensitivity"] + figures[t]["specificity"])
    urgent = max([t for t in figures if t >= threshold and figures[t]["sensitivity"] >= 0.5] or [threshold])
    return figures, threshold, urgent


def train_detector(out_dir):
    """The demonstration detector: model.onnx (the node's), twin.pt (the same network as
    TorchScript, for the twin check; the node never loads it), model.toml, metrics.json,
    reference.json."""
    import onnxruntime

    torch.manual_seed(DETECTOR_SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    src = Source()
    xtr, btr = detection_dataset(src, 2400, SEED)
    xva, bva = detection_dataset(src, 400, SEED + 1)
    heat, cell, reg = detection_targets(btr)
    print(f"data: {len(xtr)} training and {len(xva)} validation images in {time.time() - started:.0f}s", flush=True)
    net = NoduleDetector()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    epochs = 8
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * math.ceil(len(xtr) / 32))
    g = torch.Generator().manual_seed(DETECTOR_SEED)
    truth = bva.numpy()
    positive = ~np.isnan(truth[:, 0])
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            loss = detection_loss(net.cells(xtr[idx]), heat[idx], cell[idx], reg[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        net.eval()
        boxes, scores = detections(net, xva)
        best = iou(boxes[:, 0], truth)[positive]
        print(f"epoch {epoch + 1}: loss {total / len(xtr):.4f}, image AUC {auc(scores[:, 0], positive):.4f}, "
              f"best box IoU >= 0.3 on {np.mean(best >= 0.3):.3f} of positives ({time.time() - started:.0f}s)", flush=True)
    net.eval()
    seconds = round(time.time() - started, 1)
    boxes, scores = detections(net, xva)
    figures, threshold, urgent = operating_points(boxes, scores, truth)
    best_iou = iou(boxes[:, 0], truth)[positive]

    os.makedirs(out_dir, exist_ok=True)
    example = torch.zeros(1, 1, SIZE, SIZE)
    twin = torch.jit.trace(net, example)
    twin.save(os.path.join(out_dir, "twin.pt"))
    onnx_path = os.path.join(out_dir, "model.onnx")
    torch.onnx.export(net, (example,), onnx_path, input_names=["image"], output_names=["boxes", "scores"], opset_version=17,
                      dynamo=False, dynamic_axes={"image": {0: "N"}, "boxes": {0: "N"}, "scores": {0: "N"}})
    # ONNX Runtime and the TorchScript twin on the validation images, three at a time: the
    # same boxes and scores.
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    loaded = torch.jit.load(os.path.join(out_dir, "twin.pt")).eval()
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(xva), 3):
            ob, os_ = session.run(None, {"image": xva[i:i + 3].numpy()})
            tb, ts = loaded(xva[i:i + 3])
            live = ts.numpy() > 0  # a score-0 slot (no peak) is padding: its box is not compared
            worst = max(worst, float(np.abs(ob - tb.numpy())[live].max(initial=0)), float(np.abs(os_ - ts.numpy()).max()))
    print(f"ONNX Runtime against TorchScript: max |difference| {worst:.2e}", flush=True)
    assert worst < 1e-4, worst

    at = figures[threshold]
    metrics = {
        "validation_images": len(xva),
        "validation_positives": int(positive.sum()),
        "training_images": len(xtr),
        "epochs": epochs,
        "image_auc_best_score": round(auc(scores[:, 0], positive), 4),
        "best_box_iou_at_least_0.3": round(float(np.mean(best_iou >= 0.3)), 4),
        "best_box_iou_at_least_0.5": round(float(np.mean(best_iou >= 0.5)), 4),
        "best_box_median_iou": round(float(np.median(best_iou)), 4),
        "suggested_positive_threshold": threshold,
        "suggested_urgent_threshold": urgent,
        "detection_sensitivity_at_threshold": round(at["sensitivity"], 4),
        "specificity_at_threshold": round(at["specificity"], 4),
        "false_positive_image_rate_at_threshold": round(1 - at["specificity"], 4),
        "false_boxes_per_image_at_threshold": round(at["false_boxes_per_image"], 4),
        "detection_sensitivity_at_urgent": round(figures[urgent]["sensitivity"], 4),
        "onnx_torchscript_max_difference": float(f"{worst:.3g}"),
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds": seconds,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "seed": DETECTOR_SEED,
        "data_seed": SEED,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "model.toml"), "w") as f:
        f.write(DETECTOR_MANIFEST.format(positive=threshold, urgent=urgent, sensitivity=at["sensitivity"], specificity=at["specificity"]))
    # A detector's label probability is its best box's score.
    write_reference(out_dir, {"nodule": scores[:, 0]}, "validation images (one per study)", len(xva))
    print(json.dumps(metrics))


DETECTOR_MANIFEST = """\
# The demonstration detector (scripts/train-demo-model.py train-detector). NOT CLINICALLY VALIDATED.
# Written by the training script: edit the script, not this file.
name = "demo-nodule-detector"
version = "1.0.0"
demonstration = true
manufacturer = "triage-node project (demonstration)"
intended_use = "Demonstration of the triage-node pipeline only: draws boxes around round, nodule-like opacities on adult frontal chest radiographs. Not clinically validated; not for diagnosis or patient care."
limits = "Trained on synthetic lesions composited onto one public chest radiograph (pydicom-data RG1); it has never seen a real nodule. Its output says nothing about real patients."

[routing]
modalities = ["CR", "DX"]
body_parts = ["CHEST"]
photometric = ["MONOCHROME1", "MONOCHROME2"]

[input]
size = [128, 128]
channels = 1
# The file's VOI window, else the 0.5-99.5 percentile window; MONOCHROME1 is inverted.
window = {{ CR = "file", DX = "file" }}
percentiles = [0.5, 99.5]
mean = 0.0
std = 1.0
name = "image"

[outputs]
kind = "detection"
labels = ["nodule"]
# The operating point chosen by the training script on its validation images (metrics.json:
# detection sensitivity {sensitivity:.3f}, specificity {specificity:.3f} at {positive}); urgent: the highest
# threshold that still finds half of its nodules. A site re-chooses them with `triage-node evaluate`.
positive = [{positive}]
urgent = [{urgent}]
codes = ["SCT:27925004:Nodule"]
boxes = 0                          # [N, 5, 4]: x0, y0, x1, y1 in the 128 x 128 input's pixels
scores = 1                         # [N, 5]: probabilities, best first; 0 = no box
names = ["boxes", "scores"]

[aggregate]
method = "max"
"""


# ---- labelled DICOM cases ------------------------------------------------------------------

def cases(out_dir, n, seed=SEED + 2):
    """N labelled cases as DICOM CR files (one study each, fictitious demo patients), half with
    a nodule, labels.csv (file,nodule) and boxes.csv (file,x0,y0,x1,y1: the nodule's extent in
    the file's pixels, (0, 0) the top left corner of the top left pixel; empty on negatives)."""
    from pydicom.uid import generate_uid, ExplicitVRLittleEndian

    src = Source()
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f, open(os.path.join(out_dir, "boxes.csv"), "w", newline="") as fb:
        w, wb = csv.writer(f), csv.writer(fb)
        w.writerow(["file", "nodule"])
        wb.writerow(["file", "x0", "y0", "x1", "y1"])
        for i in range(n):
            positive = i % 2 == 0
            raw, _, box = make_case_with_box(src, rng, positive, rows=512)
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
            wb.writerow([name] + (["%.2f" % v for v in box] if box else ["", "", "", ""]))


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
    elif cmd == "train-detector" and len(sys.argv) == 3:
        train_detector(sys.argv[2])
    else:
        sys.exit(__doc__)
