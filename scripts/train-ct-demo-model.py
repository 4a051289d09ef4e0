#!/usr/bin/env python3
"""Train the CT demonstration model shipped in models/demo-ct-hyperdense/ (CPU, minutes, seeded).

DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED. It learns to find synthetic hyperdense lesions
(round, +35 to +70 HU above brain, the density of fresh blood) composited onto one real axial
head CT slice (pydicom-data 693_UNCR, "5/5mm Plain"), seen in a brain window (centre 40 HU,
width 80 HU). Volumes are made from that one slice by a smooth change of scale from slice to
slice, small shifts and noise; a lesion is a sphere, so it shows on adjacent slices. It knows
nothing about real haemorrhage; it exists so that the node's CT path (series selection, volume
aggregation, heatmap on the key slice, the SR naming the series) runs on real DICOM.

    train-ct-demo-model.py train OUT_DIR             writes model.pt (TorchScript) + metrics.json
    train-ct-demo-model.py series OUT_DIR N [lesion] writes one axial series of N slices as a
                                                      CT scanner sends it (one study), with a
                                                      lesion when `lesion` is given
    train-ct-demo-model.py model-input FILE OUT      the model input of FILE (f32 LE)
    train-ct-demo-model.py reference PACKAGE_DIR     reference.json: the shipped model.pt's scores on the
                                                     validation volumes and their input statistics (drift
                                                     check; training writes it too)
    train-ct-demo-model.py train-volume OUT_DIR      models/more/demo-ct-volume: a 3D classifier of the
                                                     whole series (input.kind = "volume", 16 x 128 x 128) with
                                                     a 3D class activation map; model.pt, metrics.json,
                                                     reference.json
    train-ct-demo-model.py train-segmenter OUT_DIR   models/more/demo-ct-lesion-seg: a 2D slice segmenter
                                                     (outputs.kind = "segmentation", per-pixel lesion
                                                     probability, 128 x 128); model.pt, metrics.json,
                                                     reference.json
    train-ct-demo-model.py volume-input DIR OUT      the volume model's input of the series in DIR (f32 LE,
                                                     [16, 128, 128]): ordered along the slice normal, resampled
                                                     in HU (trilinear, align_corners=False), then windowed,
                                                     as the node does (src/inference/volume.rs)

The preprocessing is the node's (model.toml: CT window {center 40, width 80} on Modality LUT
values, bilinear resize with pixel centres aligned and no antialiasing, 128x128), written with
the helpers of scripts/train-demo-model.py.
"""
import functools
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("chest_demo", os.path.join(HERE, "train-demo-model.py"))
chest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chest)

SIZE = 128
SEED = 20261202
CENTER, WIDTH = 40.0, 80.0
# A lesion must show on this many adjacent slices (model.toml [aggregate] k).
SUPPORT = 2


@functools.lru_cache(maxsize=1)
def source():
    import data_store

    ds = pydicom.dcmread(os.path.join(os.path.dirname(data_store.__file__), "data", "693_UNCR.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    # Brain: soft tissue inside the skull, away from the bone (eroded by a 9x9 minimum).
    soft = (hu > 10) & (hu < 60)
    t = torch.from_numpy((~soft).astype(np.float32))[None, None]
    brain = (F.max_pool2d(t, 19, stride=1, padding=9)[0, 0].numpy() == 0)
    return ds, hu, brain


def model_input_of(hu):
    return chest.resize(chest.window_linear(hu.astype(np.float64), CENTER, WIDTH).astype(np.float32), SIZE)


def model_input(path):
    ds = pydicom.dcmread(path)
    return model_input_of(apply_modality_lut(ds.pixel_array, ds))


def transform(hu, scale, dy, dx):
    """The slice zoomed about its centre by `scale` and shifted by (dy, dx) pixels (air outside)."""
    n = hu.shape[0]
    theta = torch.tensor([[[1 / scale, 0, -2 * dx / n], [0, 1 / scale, -2 * dy / n]]], dtype=torch.float32)
    grid = F.affine_grid(theta, (1, 1, n, n), align_corners=False)
    t = torch.from_numpy(hu)[None, None] + 1000.0
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy() - 1000.0


def lesion(shape, cy, cx, radius, contrast):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(radius, 1e-3)
    return contrast * np.clip(1 - d ** 4, 0, None)


def make_slice(hu, brain, rng, positive):
    """One training slice: the source at a random scale and shift, noise, with or without a
    lesion cross-section (in HU)."""
    return labelled_slice(hu, brain, rng, positive)[0]


def labelled_slice(hu, brain, rng, positive):
    """make_slice's slice and its true lesion mask (inside the lesion and the brain; all false
    without a lesion)."""
    scale, dy, dx = rng.uniform(0.8, 1.1), rng.uniform(-20, 20), rng.uniform(-20, 20)
    img = transform(hu, scale, dy, dx)
    mask = transform(brain.astype(np.float32) * 2000 - 1000, scale, dy, dx) > 0
    img = img + rng.normal(0, rng.uniform(2, 6), img.shape).astype(np.float32)
    truth = np.zeros(img.shape, bool)
    if positive:
        ys, xs = np.nonzero(mask)
        i = rng.integers(len(ys))
        added = lesion(img.shape, ys[i], xs[i], rng.uniform(6, 22), rng.uniform(35, 70)) * mask
        img = img + added
        truth = added > 0
    return img, truth


def slices(n, seed):
    rng = np.random.default_rng(seed)
    _, hu, brain = source()
    xs, ys = np.zeros((n, 1, SIZE, SIZE), np.float32), np.zeros((n, 1), np.float32)
    for i in range(n):
        positive = i % 2 == 0
        xs[i, 0] = model_input_of(make_slice(hu, brain, rng, positive))
        ys[i, 0] = float(positive)
    return torch.from_numpy(xs), torch.from_numpy(ys)


_BRAIN_AT = {}


def brain_at(brain, scale):
    """The brain mask zoomed by `scale` (as `transform`, no shift), computed once per scale."""
    key = (id(brain), float(scale))
    if key not in _BRAIN_AT:
        _BRAIN_AT[key] = transform(brain.astype(np.float32) * 2000 - 1000, scale, 0, 0) > 0
    return _BRAIN_AT[key]


def volume(hu, brain, rng, n, with_lesion, radius=(3, 7), contrast=(40, 70)):
    """N axial slices 1 mm apart: the head narrows towards the ends; a spherical lesion (radius
    in mm, contrast in HU above brain) when asked. Returns (slices in HU, the lesion's slice
    range or None)."""
    mid = (n - 1) / 2
    out, spread = [], None
    if with_lesion:
        cz = rng.uniform(0.25 * n, 0.75 * n)
        r = rng.uniform(*radius)
        ys, xs = np.nonzero(brain)
        i = rng.integers(len(ys))
        cy, cx, contrast = ys[i], xs[i], rng.uniform(*contrast)
        spread = (int(np.ceil(cz - r)), int(np.floor(cz + r)))
    for z in range(n):
        scale = 1.0 - 0.25 * ((z - mid) / max(mid, 1)) ** 2
        img = transform(hu, scale, rng.uniform(-1, 1), rng.uniform(-1, 1))
        mask = brain_at(brain, scale)
        img = img + rng.normal(0, 4, img.shape).astype(np.float32)
        if spread and abs(z - cz) < r:
            rz = np.sqrt(r * r - (z - cz) ** 2) / 0.45  # mm to pixels (0.45 mm pixels)
            img = img + lesion(img.shape, cy * scale + (1 - scale) * 256, cx * scale + (1 - scale) * 256, rz, contrast) * mask
        out.append(img)
    return out, spread


def adjacent(p, k=SUPPORT):
    """The node's `adjacent` aggregation (src/triage/aggregate.rs): the best minimum over k
    consecutive slices."""
    p = np.asarray(p)
    if len(p) < k:
        return float(p.min()) if len(p) else 0.0
    return float(max(p[i:i + k].min() for i in range(len(p) - k + 1)))


def train(out_dir):
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    xtr, ytr = slices(2000, SEED)
    xva, yva = slices(400, SEED + 1)
    print(f"data: {len(xtr)} training and {len(xva)} validation slices in {time.time() - started:.0f}s", flush=True)
    net = chest.NoduleNet()
    epochs = 6
    pv = chest.fit(net, xtr, ytr, xva, yva, epochs, SEED, started, "validation slice AUC")
    truth = yva[:, 0].numpy() == 1

    # Volumes: synthetic series of 24 slices, half with a lesion, aggregated as the node does:
    # lesions like the training ones, and smaller, fainter ones (radius 2-3.5 mm, +25-40 HU).
    histograms = []
    vol_scores, vol_truth = volumes(net, 40, SEED + 2, histograms)
    hard_scores, hard_truth = volumes(net, 40, SEED + 4, radius=(2, 3.5), contrast=(25, 40))

    def j(scores, labels, t):
        return (scores[labels == 1] >= t).mean() + (scores[labels == 0] < t).mean()

    # The operating point on the typical volumes (step 0.05); among equally good thresholds the
    # one nearest 0.5.
    candidates = [round(0.05 * k, 2) for k in range(1, 20)]
    best = max(j(vol_scores, vol_truth, t) for t in candidates)
    threshold = min((t for t in candidates if j(vol_scores, vol_truth, t) == best), key=lambda t: abs(t - 0.5))
    os.makedirs(out_dir, exist_ok=True)
    scripted = torch.jit.trace(net, torch.zeros(1, 1, SIZE, SIZE))
    scripted.save(os.path.join(out_dir, "model.pt"))
    metrics = {
        "validation_slice_auc": round(chest.auc(pv, yva[:, 0].numpy()), 4),
        "validation_slices": len(xva),
        "training_slices": len(xtr),
        "epochs": epochs,
        "validation_volumes": len(vol_truth),
        "validation_volume_auc": round(chest.auc(vol_scores, vol_truth), 4),
        "aggregation": f"adjacent, k={SUPPORT}",
        "suggested_positive_threshold": threshold,
        "volume_sensitivity_at_threshold": round(float((vol_scores[vol_truth == 1] >= threshold).mean()), 4),
        "volume_specificity_at_threshold": round(float((vol_scores[vol_truth == 0] < threshold).mean()), 4),
        "small_faint_volumes": len(hard_truth),
        "small_faint_volume_auc": round(chest.auc(hard_scores, hard_truth), 4),
        "small_faint_sensitivity_at_threshold": round(float((hard_scores[hard_truth == 1] >= threshold).mean()), 4),
        "small_faint_specificity_at_threshold": round(float((hard_scores[hard_truth == 0] < threshold).mean()), 4),
        "slice_sensitivity_at_0.5": round(float((pv[truth] >= 0.5).mean()), 4),
        "slice_specificity_at_0.5": round(float((pv[~truth] < 0.5).mean()), 4),
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "seed": SEED,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    chest.write_reference(out_dir, {"hyperdense_lesion": vol_scores}, "validation volumes (one per study)", len(vol_truth), input_stats(histograms))
    print(json.dumps(metrics))


def volumes(net, n, seed, inputs=None, **lesion):
    """N synthetic series of 24 slices, half with a lesion, scored as the node aggregates. With
    `inputs` (a list), each series' input histogram is appended to it: the mean of its slices'
    (the node's study value, src/db/inference.rs `InputStats::of_study`)."""
    _, hu, brain = source()
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    with torch.no_grad():
        for v in range(n):
            imgs, spread = volume(hu, brain, rng, 24, v % 2 == 0, **lesion)
            x = torch.from_numpy(np.stack([model_input_of(s) for s in imgs])[:, None])
            scores.append(adjacent(net(x)[0][:, 0].numpy()))
            labels.append(int(spread is not None))
            if inputs is not None:
                inputs.append([round(float(b), 5) for b in np.mean([chest.histogram(s[0]) for s in x.numpy()], axis=0)])
    return np.array(scores), np.array(labels)


def input_stats(histograms):
    """reference.json's "inputs" of validation series made as `series` writes them: their
    histograms, the source slice's Pixel Spacing (rows) and Slice Thickness 1.0 mm."""
    ds0, _, _ = source()
    n = len(histograms)
    return {"histogram": histograms, "pixel_spacing": [float(ds0.PixelSpacing[0])] * n, "slice_thickness": [1.0] * n}


def reference(package_dir):
    """reference.json of the shipped model (its validation volumes), without training again."""
    torch.set_num_threads(2)
    net = torch.jit.load(os.path.join(package_dir, "model.pt")).eval()
    histograms = []
    scores, truth = volumes(net, 40, SEED + 2, histograms)
    chest.write_reference(package_dir, {"hyperdense_lesion": scores}, "validation volumes (one per study)", len(truth), input_stats(histograms))


def series(out_dir, n, with_lesion, seed=SEED + 3):
    """One axial series of N slices (1 mm), one study of a fictitious demo patient, as a CT
    scanner would send it; with a lesion when asked. Prints the lesion's slice range."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds0, hu, brain = source()
    rng = np.random.default_rng(seed + (1 if with_lesion else 0))
    imgs, spread = volume(hu, brain, rng, n, with_lesion)
    os.makedirs(out_dir, exist_ok=True)
    study, series_uid, frame = generate_uid(), generate_uid(), generate_uid()
    slope, intercept = float(ds0.get("RescaleSlope", 1)), float(ds0.get("RescaleIntercept", 0))
    for z, img in enumerate(imgs):
        ds = ds0.copy()
        ds.file_meta = ds0.file_meta.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        tag = "LESION" if with_lesion else "NOLESION"
        ds.PatientName = f"DEMO^HEADCT{tag}"
        ds.PatientID = f"DEMOCT{tag}"
        ds.AccessionNumber = f"DEMOCTACC{1 if with_lesion else 0}"
        ds.StudyDescription = "Demo head CT (synthetic lesion study)"
        ds.SeriesDescription = "Head 1.0 axial (demo)"
        ds.BodyPartExamined = "HEAD"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ConvolutionKernel = "SOFT"
        ds.BurnedInAnnotation = "NO"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [-115.0, -115.0, float(z)]
        ds.SliceLocation = float(z)
        stored = np.round((img - intercept) / slope)
        info = np.iinfo(np.int16 if ds.PixelRepresentation == 1 else np.uint16)
        ds.PixelData = np.clip(stored, info.min, info.max).astype(info.dtype).tobytes()
        ds.save_as(os.path.join(out_dir, f"slice{z:03d}.dcm"), enforce_file_format=True)
    print("LESION", *(spread or ("none",)), flush=True)


# ---------------------------------------------------------------------------------------------
# demo-ct-volume: a 3D classifier of the whole series (input.kind = "volume").

VOLUME_SIZE = (16, 128, 128)  # model.toml input.size [D, H, W]
VOLUME_SEED = SEED + 10


def volume_input_of(slices_hu):
    """The node's volume input (src/inference/volume.rs) of slices in HU, ordered along the
    slice normal: resampled in HU to VOLUME_SIZE (trilinear, align_corners=False), then the
    brain window. [D, H, W] float32."""
    t = torch.from_numpy(np.stack([np.asarray(s, np.float32) for s in slices_hu]))[None, None]
    r = F.interpolate(t, size=VOLUME_SIZE, mode="trilinear", align_corners=False)[0, 0].numpy()
    return chest.window_linear(r.astype(np.float64), CENTER, WIDTH).astype(np.float32)


def volume_input(series_dir):
    """volume_input_of a series folder's files, ordered along their normal (Image Orientation
    and Position (Patient)), in HU after the Modality LUT."""
    slices = []
    for name in os.listdir(series_dir):
        ds = pydicom.dcmread(os.path.join(series_dir, name))
        iop = np.array(ds.ImageOrientationPatient, np.float64)
        normal = np.cross(iop[:3], iop[3:])
        slices.append((float(np.dot(normal, np.array(ds.ImagePositionPatient, np.float64))), apply_modality_lut(ds.pixel_array, ds)))
    slices.sort(key=lambda s: s[0])
    return volume_input_of([s[1] for s in slices])


class VolumeNet(torch.nn.Module):
    """A 3D network: demo-ct-hyperdense's four conv blocks as 1x3x3 convolutions (each slice of
    the volume to a 16 x 16 grid of features, no mixing across slices), then a 3x1x1 classifier
    across adjacent slices per cell (the 3D class activation map [N, 1, 16, 16, 16]), log-sum-exp
    pooling of the cell logits to one logit per volume."""

    def __init__(self):
        super().__init__()
        nn = torch.nn

        def block(i, o, pool):
            layers = [nn.Conv3d(i, o, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]
            return nn.Sequential(*(layers + ([nn.MaxPool3d((1, 2, 2))] if pool else [])))

        self.features = nn.Sequential(block(1, 16, True), block(16, 32, True), block(32, 48, True), block(48, 64, False))
        self.classifier = nn.Conv3d(64, 1, (3, 1, 1), padding=(1, 0, 0))
        self.r = 4.0

    def head(self, features):
        cells = self.classifier(features)  # [N, 1, 16, 16, 16] logits
        flat = cells.flatten(2)
        pooled = (torch.logsumexp(self.r * flat, dim=2) - math.log(flat.shape[2])) / self.r
        return torch.sigmoid(pooled), torch.sigmoid(cells)

    def forward(self, x):
        return self.head(self.features(x))

    def from_slice_model(self, path):
        """The in-plane layers (and the centre of the classifier) from a NoduleNet TorchScript
        file (demo-ct-hyperdense's model.pt): 2D kernels as 1 x 3 x 3."""
        state = {k: (v.unsqueeze(2) if v.dim() == 4 else v) for k, v in torch.jit.load(path).state_dict().items()}
        weight = torch.zeros_like(self.classifier.weight)
        weight[:, :, 1] = state.pop("classifier.weight")[:, :, 0]
        state["classifier.weight"] = weight
        self.load_state_dict(state)
        return self


def volume_set(n, seed, **lesion):
    """N synthetic series of 8 to 24 slices (as `series` writes them: HU rounded to the stored
    integers), half with a lesion, as the node gives them to a volume model."""
    _, hu, brain = source()
    rng = np.random.default_rng(seed)
    xs, ys = np.zeros((n, 1) + VOLUME_SIZE, np.float32), np.zeros((n, 1), np.float32)
    for v in range(n):
        imgs, spread = volume(hu, brain, rng, int(rng.integers(8, 25)), v % 2 == 0, **lesion)
        xs[v, 0] = volume_input_of([np.round(i) for i in imgs])
        ys[v, 0] = float(spread is not None)
    return torch.from_numpy(xs), torch.from_numpy(ys)


def operating_point(scores, labels):
    """The threshold (step 0.05) of the best Youden J on `scores`; among equals, the nearest 0.5."""

    def j(t):
        return (scores[labels == 1] >= t).mean() + (scores[labels == 0] < t).mean()

    candidates = [round(0.05 * k, 2) for k in range(1, 20)]
    best = max(j(t) for t in candidates)
    return min((t for t in candidates if j(t) == best), key=lambda t: abs(t - 0.5))


def at_threshold(scores, labels, t):
    return {"sensitivity": round(float((scores[labels == 1] >= t).mean()), 4), "specificity": round(float((scores[labels == 0] < t).mean()), 4)}


def scores_of(net, x, batch=8):
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch])[0] for i in range(0, len(x), batch)])[:, 0].numpy()


def train_volume(out_dir):
    """The in-plane layers are demo-ct-hyperdense's (trained on 2000 slices, kept frozen); the
    3x1x1 classifier across slices is trained on volumes made as the node makes them."""
    torch.manual_seed(VOLUME_SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    net = VolumeNet().from_slice_model(os.path.join(HERE, "..", "models", "demo-ct-hyperdense", "model.pt")).eval()
    for p in net.features.parameters():
        p.requires_grad_(False)

    def features(n, seed, **lesion):
        x, y = volume_set(n, seed, **lesion)
        with torch.no_grad():
            return torch.cat([net.features(x[i:i + 4]) for i in range(0, len(x), 4)]), y

    # Training lesions a little smaller and fainter than the series' (radius 2.5-7 mm, +30-70 HU).
    ftr, ytr = features(80, VOLUME_SEED, radius=(2.5, 7), contrast=(30, 70))
    fva, yva = features(40, VOLUME_SEED + 1)
    fhard, yhard = features(20, VOLUME_SEED + 2, radius=(2, 3.5), contrast=(25, 40))
    print(f"data: {len(ftr)} training and {len(fva)} validation volumes in {time.time() - started:.0f}s", flush=True)
    before = net.head(fva)[0][:, 0].detach().numpy()
    opt = torch.optim.Adam(net.classifier.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(VOLUME_SEED)
    epochs = 20
    for epoch in range(epochs):
        order = torch.randperm(len(ftr), generator=g)
        total = 0.0
        for i in range(0, len(order), 8):
            idx = order[i:i + 8]
            # Head-foot mirrored at random: the features of each slice do not depend on the others.
            f = ftr[idx].flip(2) if torch.rand(1, generator=g)[0] < 0.5 else ftr[idx]
            p, _ = net.head(f)
            loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 5 == 0:
            with torch.no_grad():
                pv = net.head(fva)[0][:, 0].numpy()
            print(f"epoch {epoch + 1}: loss {total / len(ftr):.4f}, validation volume AUC {chest.auc(pv, yva[:, 0].numpy()):.4f} ({time.time() - started:.0f}s)", flush=True)
    with torch.no_grad():
        pv, hard = net.head(fva)[0][:, 0].numpy(), net.head(fhard)[0][:, 0].numpy()
    truth = yva[:, 0].numpy()
    threshold = operating_point(pv, truth)
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.trace(net, torch.zeros((1, 1) + VOLUME_SIZE)).save(os.path.join(out_dir, "model.pt"))
    typical, faint = at_threshold(pv, truth, threshold), at_threshold(hard, yhard[:, 0].numpy(), threshold)
    metrics = {
        "input": f"volume {list(VOLUME_SIZE)} (D, H, W), brain window 40/80 HU",
        "in_plane_layers": "demo-ct-hyperdense's (frozen); the 3x1x1 classifier across slices trained here",
        "training_volumes": len(ftr),
        "validation_volumes": len(fva),
        "epochs": epochs,
        "validation_volume_auc_before_training": round(chest.auc(before, truth), 4),
        "validation_volume_auc": round(chest.auc(pv, truth), 4),
        "suggested_positive_threshold": threshold,
        "volume_sensitivity_at_threshold": typical["sensitivity"],
        "volume_specificity_at_threshold": typical["specificity"],
        "small_faint_volumes": len(fhard),
        "small_faint_volume_auc": round(chest.auc(hard, yhard[:, 0].numpy()), 4),
        "small_faint_sensitivity_at_threshold": faint["sensitivity"],
        "small_faint_specificity_at_threshold": faint["specificity"],
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "seed": VOLUME_SEED,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    chest.write_reference(out_dir, {"hyperdense_lesion": pv}, "validation volumes (one per study)", len(pv))
    print(json.dumps(metrics))


# ---------------------------------------------------------------------------------------------
# demo-ct-lesion-seg: a 2D slice segmenter (outputs.kind = "segmentation").

SEG_SEED = SEED + 20


class SegNet(torch.nn.Module):
    """A small U-Net (one conv per block, down to 16 x 16, decoded to 64 x 64, then bilinear to
    the input's size): per-pixel lesion probability [N, 1, 128, 128]."""

    def __init__(self):
        super().__init__()
        nn = torch.nn

        def conv(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.e1, self.e2, self.e3, self.e4 = conv(1, 8), conv(8, 16), conv(16, 32), conv(32, 32)
        self.d3, self.d2 = conv(64, 16), conv(32, 8)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")
        d3 = self.d3(torch.cat([up(e4), e3], 1))
        d2 = self.d2(torch.cat([up(d3), e2], 1))
        logits = F.interpolate(self.head(d2), scale_factor=2.0, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)


def labelled_slices(n, seed):
    """N slices (half with a lesion) as the model sees them, and their true masks resized the
    same way (fractions of a pixel inside)."""
    rng = np.random.default_rng(seed)
    _, hu, brain = source()
    xs, ms = np.zeros((n, 1, SIZE, SIZE), np.float32), np.zeros((n, 1, SIZE, SIZE), np.float32)
    for i in range(n):
        img, truth = labelled_slice(hu, brain, rng, i % 2 == 0)
        xs[i, 0] = model_input_of(img)
        ms[i, 0] = chest.resize(truth.astype(np.float32), SIZE)
    return torch.from_numpy(xs), torch.from_numpy(ms)


def dice(p, m, eps=1e-6):
    """Per image: 2 |P and M| / (|P| + |M|) of the masks at 0.5 (1 where both are empty)."""
    p, m = (p >= 0.5).reshape(len(p), -1), (m >= 0.5).reshape(len(m), -1)
    inter, total = (p & m).sum(1), p.sum(1) + m.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, eps))


def train_segmenter(out_dir):
    torch.manual_seed(SEG_SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    xtr, mtr = labelled_slices(800, SEG_SEED)
    xva, mva = labelled_slices(200, SEG_SEED + 1)
    print(f"data: {len(xtr)} training and {len(xva)} validation slices in {time.time() - started:.0f}s", flush=True)
    net = SegNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(SEG_SEED)
    epochs = 5

    def predict(x):
        with torch.no_grad():
            return torch.cat([net(x[i:i + 50]) for i in range(0, len(x), 50)]).numpy()

    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            p, m = net(xtr[idx]), mtr[idx]
            # Cross-entropy per pixel plus a soft Dice over the batch (lesions are small).
            soft_dice = 1 - (2 * (p * m).sum() + 1) / (p.sum() + m.sum() + 1)
            loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), m) + soft_dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        d = dice(predict(xva), mva.numpy())
        positive = mva.numpy().reshape(len(mva), -1).max(1) >= 0.5
        print(f"epoch {epoch + 1}: loss {total / len(xtr):.4f}, validation Dice (lesion slices) {d[positive].mean():.4f} ({time.time() - started:.0f}s)", flush=True)
    net.eval()
    pv, truth = predict(xva), mva.numpy()
    d = dice(pv, truth)
    has = truth.reshape(len(truth), -1).max(1) >= 0.5
    flat_p, flat_m = pv.reshape(len(pv), -1) >= 0.5, truth.reshape(len(truth), -1) >= 0.5
    pooled = 2 * (flat_p & flat_m).sum() / (flat_p.sum() + flat_m.sum())
    slice_scores = pv.reshape(len(pv), -1).max(1)

    # Series of 24 slices, half with a lesion, scored as the node does: a slice's probability
    # is its mask's maximum, aggregated `adjacent` over k = SUPPORT slices.
    _, hu, brain = source()
    rng = np.random.default_rng(SEG_SEED + 2)
    vol_scores, vol_truth = [], []
    with torch.no_grad():
        for v in range(40):
            imgs, spread = volume(hu, brain, rng, 24, v % 2 == 0)
            x = torch.from_numpy(np.stack([model_input_of(np.round(s)) for s in imgs])[:, None])
            vol_scores.append(adjacent(net(x).flatten(1).max(1).values.numpy()))
            vol_truth.append(int(spread is not None))
    vol_scores, vol_truth = np.array(vol_scores), np.array(vol_truth)
    threshold = operating_point(vol_scores, vol_truth)
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.trace(net, torch.zeros(1, 1, SIZE, SIZE)).save(os.path.join(out_dir, "model.pt"))
    point = at_threshold(vol_scores, vol_truth, threshold)
    metrics = {
        "input": f"slice [{SIZE}, {SIZE}], brain window 40/80 HU",
        "training_slices": len(xtr),
        "validation_slices": len(xva),
        "epochs": epochs,
        "validation_dice_lesion_slices": round(float(d[has].mean()), 4),
        "validation_dice_pooled": round(float(pooled), 4),
        "validation_empty_slices_with_no_mask": round(float((slice_scores[~has] < 0.5).mean()), 4),
        "validation_slice_auc_mask_max": round(chest.auc(slice_scores, has.astype(int)), 4),
        "validation_volumes": len(vol_truth),
        "validation_volume_auc": round(chest.auc(vol_scores, vol_truth), 4),
        "aggregation": f"adjacent, k={SUPPORT}",
        "suggested_positive_threshold": threshold,
        "volume_sensitivity_at_threshold": point["sensitivity"],
        "volume_specificity_at_threshold": point["specificity"],
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "seed": SEG_SEED,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    chest.write_reference(out_dir, {"hyperdense_lesion": vol_scores}, "validation volumes (one per study)", len(vol_truth))
    print(json.dumps(metrics))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "train" and len(sys.argv) == 3:
        train(sys.argv[2])
    elif cmd == "series" and len(sys.argv) in (4, 5):
        series(sys.argv[2], int(sys.argv[3]), len(sys.argv) == 5)
    elif cmd == "model-input" and len(sys.argv) == 4:
        model_input(sys.argv[2]).astype("<f4").tofile(sys.argv[3])
    elif cmd == "train-volume" and len(sys.argv) == 3:
        train_volume(sys.argv[2])
    elif cmd == "train-segmenter" and len(sys.argv) == 3:
        train_segmenter(sys.argv[2])
    elif cmd == "volume-input" and len(sys.argv) == 4:
        volume_input(sys.argv[2]).astype("<f4").tofile(sys.argv[3])
    elif cmd == "reference" and len(sys.argv) == 3:
        reference(sys.argv[2])
    else:
        sys.exit(__doc__)
