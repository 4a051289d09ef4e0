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
                                                     validation volumes (drift check; training writes it too)

The preprocessing is the node's (model.toml: CT window {center 40, width 80} on Modality LUT
values, bilinear resize with pixel centres aligned and no antialiasing, 128x128), written with
the helpers of scripts/train-demo-model.py.
"""
import importlib.util
import json
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
    scale, dy, dx = rng.uniform(0.8, 1.1), rng.uniform(-20, 20), rng.uniform(-20, 20)
    img = transform(hu, scale, dy, dx)
    mask = transform(brain.astype(np.float32) * 2000 - 1000, scale, dy, dx) > 0
    img = img + rng.normal(0, rng.uniform(2, 6), img.shape).astype(np.float32)
    if positive:
        ys, xs = np.nonzero(mask)
        i = rng.integers(len(ys))
        img = img + lesion(img.shape, ys[i], xs[i], rng.uniform(6, 22), rng.uniform(35, 70)) * mask
    return img


def slices(n, seed):
    rng = np.random.default_rng(seed)
    _, hu, brain = source()
    xs, ys = np.zeros((n, 1, SIZE, SIZE), np.float32), np.zeros((n, 1), np.float32)
    for i in range(n):
        positive = i % 2 == 0
        xs[i, 0] = model_input_of(make_slice(hu, brain, rng, positive))
        ys[i, 0] = float(positive)
    return torch.from_numpy(xs), torch.from_numpy(ys)


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
        mask = transform(brain.astype(np.float32) * 2000 - 1000, scale, 0, 0) > 0
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
    vol_scores, vol_truth = volumes(net, 40, SEED + 2)
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
    chest.write_reference(out_dir, {"hyperdense_lesion": vol_scores}, "validation volumes (one per study)", len(vol_truth))
    print(json.dumps(metrics))


def volumes(net, n, seed, **lesion):
    """N synthetic series of 24 slices, half with a lesion, scored as the node aggregates."""
    _, hu, brain = source()
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    with torch.no_grad():
        for v in range(n):
            imgs, spread = volume(hu, brain, rng, 24, v % 2 == 0, **lesion)
            x = torch.from_numpy(np.stack([model_input_of(s) for s in imgs])[:, None])
            scores.append(adjacent(net(x)[0][:, 0].numpy()))
            labels.append(int(spread is not None))
    return np.array(scores), np.array(labels)


def reference(package_dir):
    """reference.json of the shipped model (its validation volumes), without training again."""
    torch.set_num_threads(2)
    net = torch.jit.load(os.path.join(package_dir, "model.pt")).eval()
    scores, truth = volumes(net, 40, SEED + 2)
    chest.write_reference(package_dir, {"hyperdense_lesion": scores}, "validation volumes (one per study)", len(truth))


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


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "train" and len(sys.argv) == 3:
        train(sys.argv[2])
    elif cmd == "series" and len(sys.argv) in (4, 5):
        series(sys.argv[2], int(sys.argv[3]), len(sys.argv) == 5)
    elif cmd == "model-input" and len(sys.argv) == 4:
        model_input(sys.argv[2]).astype("<f4").tofile(sys.argv[3])
    elif cmd == "reference" and len(sys.argv) == 3:
        reference(sys.argv[2])
    else:
        sys.exit(__doc__)
