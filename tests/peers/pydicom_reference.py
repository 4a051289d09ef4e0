"""Reference arrays from pydicom + numpy + torch, for the Rust preprocessing tests.

  pydicom_reference.py FILE OUT_PREFIX
writes OUT_PREFIX.modality.f32 (Modality LUT applied: pydicom.pixels.apply_modality_lut),
OUT_PREFIX.voi.f32 (then the file's first VOI window: pydicom.pixels.apply_voi_lut), both raw
little-endian float32 in frame, row, column order, and prints the shape and photometric.

  pydicom_reference.py model-input FILE SPEC_JSON OUT.f32 [MODEL.pt]
writes the model input tensor of FILE's first frame as a training pipeline makes it (float32,
or float16 values widened to float32, raw little-endian, in the tensor's own order), from
SPEC_JSON: {"size": [h, w], "channels": c, "windows": [[center, width], ...] (one, or one per
channel) | "rgb": true, "scale": 1 | 255, "mean": [...], "std": [...] (per channel),
"layout": "nchw" | "nhwc", "dtype": "float32" | "float16"}. With MODEL.pt, also runs the
TorchScript model on it and prints {"outputs": ..., "softmax": ..., "sigmoid": ...} as JSON.

  pydicom_reference.py model-inputs JOBS_JSON
the same for a list of jobs [{"file", "spec", "out"[, "model"]}] in one run (one torch import);
prints one JSON line per job that names a model.

  pydicom_reference.py rgb-file OUT.dcm
writes a small synthetic RGB Secondary Capture (8 bits, 37 x 53, seeded noise over gradients).
"""
import json
import sys

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def references(path, out):
    ds = pydicom.dcmread(path)
    modality = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    voi = apply_voi_lut(modality, ds, index=0)
    modality.astype("<f4").tofile(out + ".modality.f32")
    np.asarray(voi, dtype="<f4").tofile(out + ".voi.f32")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    print(frames, ds.Rows, ds.Columns, ds.PhotometricInterpretation, flush=True)


def linear_window(values, center, width):
    """PS3.3 C.11.2.1.2.1, mapped to 0..1."""
    lower = center - 0.5 - (width - 1) / 2
    upper = center - 0.5 + (width - 1) / 2
    scaled = (values - (center - 0.5)) / max(width - 1, 1e-300) + 0.5
    return np.where(values <= lower, 0.0, np.where(values > upper, 1.0, scaled))


def model_input(path, spec):
    import torch
    import torch.nn.functional as F

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if spec.get("rgb"):
        # As an image library gives an RGB picture: 8-bit samples, divided by 255 (ToTensor).
        rgb = pixels.astype(np.float64) / (2 ** int(ds.BitsStored) - 1)
        planes = [rgb[..., c] for c in range(3)]
    else:
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        planes = []
        for center, width in spec["windows"]:
            y = linear_window(values, center, width)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                y = 1.0 - y
            planes.append(y)
        if len(planes) == 1:
            planes = planes * spec["channels"]
    x = torch.from_numpy(np.stack(planes)[None].astype(np.float32))
    x = F.interpolate(x, size=tuple(spec["size"]), mode="bilinear", align_corners=False)
    x = x * float(spec.get("scale", 1))
    mean = torch.tensor(spec.get("mean", [0.0] * x.shape[1]), dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(spec.get("std", [1.0] * x.shape[1]), dtype=torch.float32)[None, :, None, None]
    x = (x - mean) / std
    if spec.get("layout", "nchw") == "nhwc":
        x = x.permute(0, 2, 3, 1).contiguous()
    if spec.get("dtype", "float32") == "float16":
        x = x.half()
    return x


def rgb_file(out):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(11)
    rows, cols = 37, 53
    r = np.linspace(0, 255, cols)[None, :].repeat(rows, 0)
    g = np.linspace(255, 0, rows)[:, None].repeat(cols, 1)
    b = np.full((rows, cols), 90.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 20, (rows, cols, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Test^Rgb"
    ds.PatientID = "RGB1"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = img.tobytes()
    ds.save_as(out, enforce_file_format=True)


def job(file, spec, out, model=None):
    import torch

    x = model_input(file, spec)
    x.float().numpy().astype("<f4").tofile(out)
    if model:
        with torch.no_grad():
            y = torch.jit.load(model).eval()(x)
        y = (y[0] if isinstance(y, (tuple, list)) else y).float()
        print(json.dumps({"outputs": y.tolist(), "softmax": torch.softmax(y, 1).tolist(), "sigmoid": torch.sigmoid(y).tolist()}), flush=True)


if sys.argv[1] == "model-input":
    job(sys.argv[2], json.load(open(sys.argv[3])), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
elif sys.argv[1] == "model-inputs":
    for j in json.load(open(sys.argv[2])):
        job(j["file"], j["spec"], j["out"], j.get("model"))
elif sys.argv[1] == "rgb-file":
    rgb_file(sys.argv[2])
else:
    references(sys.argv[1], sys.argv[2])
