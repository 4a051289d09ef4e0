#!/usr/bin/env python3
"""Python side of scripts/bench-infer.sh: the same TorchScript file driven from Python, the way
a Python inference service does it (pydicom read, numpy + torch preprocessing, torch.jit.load),
and the same ONNX file through Python onnxruntime.

    bench_infer.py densenet DIR                 a DenseNet-121-sized package (random weights,
                                                1 x 224 x 224, 14 labels, CAM head) in DIR
    bench_infer.py onnx PACKAGE OUT             PACKAGE's model.pt exported to ONNX (torch.onnx.export,
                                                batch axis free; a volume model's 5-D input too)
                                                as the package OUT, same manifest,
                                                named <name>-onnx; prints the largest output
                                                difference from TorchScript on random inputs
    bench_infer.py run MODEL SIZE BATCH FILE...      timings as JSON (one warm-up batch first);
                                                MODEL .pt: torch.jit.load (BENCH_DEVICE=cuda:0,
                                                BENCH_HALF=1: on that device, in fp16); .onnx:
                                                onnxruntime, CPU provider, as many threads as torch
"""
import json
import os
import sys
import time

import numpy as np
import pydicom
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load_training_module():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train-demo-model.py")
    spec = importlib.util.spec_from_file_location("train_demo_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet121(nn.Module):
    """DenseNet-121 (growth 32, blocks 6-12-24-16), one input channel, 14 labels, with the
    classifier applied per cell as the class activation map (as CheXNet-style models do)."""

    def __init__(self, labels=14):
        super().__init__()
        layers = [nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        c = 64
        for i, n in enumerate([6, 12, 24, 16]):
            for _ in range(n):
                layers.append(DenseLayer(c, 32))
                c += 32
            if i < 3:
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, labels, 1)

    def forward(self, x):
        cells = self.classifier(self.features(x))  # [N, 14, 7, 7]
        return torch.sigmoid(cells.mean(dim=(2, 3))), torch.sigmoid(cells)


LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
          "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def densenet(out_dir):
    torch.manual_seed(0)
    net = DenseNet121().eval()
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.trace(net, torch.zeros(1, 1, 224, 224)).save(os.path.join(out_dir, "model.pt"))
    labels = ", ".join(f'"{l}"' for l in LABELS)
    half = ", ".join(["0.5"] * len(LABELS))
    urgent = ", ".join(["0.9"] * len(LABELS))
    with open(os.path.join(out_dir, "model.toml"), "w") as f:
        f.write(f'''name = "densenet121-random"
version = "0"
demonstration = true
allow_half = true
intended_use = "Benchmark stand-in for a DenseNet-121 chest X-ray classifier; random weights."
limits = "Random weights: its outputs mean nothing."
[routing]
modalities = ["CR", "DX"]
[input]
size = [224, 224]
channels = 1
window = {{ CR = "file", DX = "file" }}
[outputs]
labels = [{labels}]
positive = [{half}]
urgent = [{urgent}]
probabilities = 0
cam = 1
[aggregate]
method = "max"
''')


def onnx(package, out_dir):
    import tomllib
    import warnings

    import onnxruntime

    with open(os.path.join(package, "model.toml"), "rb") as f:
        manifest = tomllib.load(f)
    # [N, C, H, W], or a volume's [N, C, D, H, W] (input.size [D, H, W]).
    shape = (1, manifest["input"]["channels"], *manifest["input"]["size"])
    names = ["probabilities", "cam"] if "cam" in manifest["outputs"] else ["probabilities"]
    model = torch.jit.load(os.path.join(package, "model.pt")).eval()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), path, input_names=["image"], output_names=names,
                          dynamic_axes={n: {0: "N"} for n in ["image"] + names}, opset_version=17, dynamo=False)
    with open(os.path.join(package, "model.toml")) as f:
        text = f.read().replace(f'name = "{manifest["name"]}"', f'name = "{manifest["name"]}-onnx"', 1)
    with open(os.path.join(out_dir, "model.toml"), "w") as f:
        f.write(text)
    x = torch.rand((3,) + shape[1:])
    with torch.no_grad():
        want = model(x)
    want = want if isinstance(want, tuple) else (want,)
    got = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    print(max(float(np.abs(g - t.numpy()).max()) for g, t in zip(got, want)))


def run(model_path, size, batch, files):
    t = load_training_module()
    if model_path.endswith(".onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def model(x):
            return session.run(None, {name: x.numpy()})
    else:
        # BENCH_DEVICE=cuda:0 (BENCH_HALF=1: fp16 weights and inputs), as the node's
        # inference.device and allow_half; outputs come back to the host as float32.
        device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
        half = os.environ.get("BENCH_HALF") == "1"
        scripted = torch.jit.load(model_path, map_location=device).eval()
        if half:
            scripted = scripted.half()

        def model(x):
            x = x.to(device)
            out = scripted(x.half() if half else x)
            return [o.float().cpu() for o in (out if isinstance(out, tuple) else (out,))]

    def prepare(path):
        ds = pydicom.dcmread(path)
        raw = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        return t.resize(t.display(raw, ds), size)

    def one(chunk):
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack([prepare(p) for p in chunk])[:, None])
        t1 = time.perf_counter()
        with torch.no_grad():
            model(x)
        return t1 - t0, time.perf_counter() - t1

    one(files[:batch])
    start = time.perf_counter()
    pre = fwd = 0.0
    for i in range(0, len(files), batch):
        p, f = one(files[i:i + batch])
        pre += p
        fwd += f
    total = time.perf_counter() - start
    print(json.dumps({"batch": batch, "images": len(files), "total_s": total, "preprocess_s": pre, "forward_s": fwd,
                      "images_per_s": len(files) / total, "ms_per_image": total * 1000 / len(files),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "densenet":
        densenet(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "onnx":
        onnx(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)
