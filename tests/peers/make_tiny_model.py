"""A tiny TorchScript model and its outputs on a fixed input, computed by Python torch, so the
Rust runtime's forward pass can be compared with PyTorch's own (tests/torch_runtime.rs).

  make_tiny_model.py OUT_DIR   writes tiny.pt and tiny_expected.json, tiny.onnx,
                               tiny_slow.pt, identity.pt and tiny_logits.pt
The model: a 3x3 convolution to 2 class maps, ReLU, then (per-class probabilities by sigmoid of
the spatial mean, the class activation maps): the shape of the node's model outputs.
tiny.onnx: tiny.pt's ONNX twin (the same weights, torch.onnx.export), input "image" [N, 1, 8, 8],
outputs "probabilities" [N, 2] and "cam" [N, 2, 8, 8], for the ONNX Runtime tests (tests/it/onnx.rs).
tiny_slow.pt: the same outputs after a second or two of matrix products per forward pass, so
that the cluster tests can stop a node while its study job is certainly still running.
identity.pt: returns its input as float32, whatever its shape and type: the tensor a model gets.
tiny_logits.pt: a softmax classifier's shape: takes a float16 NHWC batch [N, H, W, 3] (refuses
anything else) and returns logits [N, 3] alone, no class activation map.
"""
import json
import os
import sys

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        cam = torch.relu(self.conv(x))
        return torch.sigmoid(cam.mean(dim=(2, 3)) - 0.5), cam


class Slow(torch.nn.Module):
    def __init__(self, tiny):
        super().__init__()
        self.tiny = tiny

    def forward(self, x):
        w = torch.full((384, 384), 1.0 / 384.0)
        y = torch.ones(384, 384)
        for _ in range(1200):
            y = y @ w
        probs, cam = self.tiny(x)
        return probs + 0.0 * y.mean(), cam


class Identity(torch.nn.Module):
    def forward(self, x):
        return x.float()


class Logits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.tensor([[2.0, -1.0, 0.5], [-1.5, 3.0, 0.0], [0.5, 0.5, -2.0]]))
        self.register_buffer("b", torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        if x.dtype != torch.float16 or x.dim() != 4 or x.size(3) != 3:
            raise RuntimeError("expected a float16 NHWC batch of 3 channels")
        m = x.float().mean(dim=(1, 2))
        return m @ self.w + self.b


torch.manual_seed(7)
model = Tiny().eval()
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
scripted = torch.jit.script(model)
scripted.save(os.path.join(out, "tiny.pt"))
torch.onnx.export(
    model,
    (torch.zeros(1, 1, 8, 8),),
    os.path.join(out, "tiny.onnx"),
    input_names=["image"],
    output_names=["probabilities", "cam"],
    dynamic_axes={"image": {0: "N"}, "probabilities": {0: "N"}, "cam": {0: "N"}},
    opset_version=17,
    dynamo=False,
)
torch.jit.script(Slow(model).eval()).save(os.path.join(out, "tiny_slow.pt"))
torch.jit.script(Identity().eval()).save(os.path.join(out, "identity.pt"))
torch.jit.script(Logits().eval()).save(os.path.join(out, "tiny_logits.pt"))
shape = [2, 1, 8, 8]
x = (torch.arange(128, dtype=torch.float32).reshape(shape) / 127.0)
with torch.no_grad():
    probs, cam = scripted(x)
json.dump(
    {
        "input_shape": shape,
        "input": x.flatten().tolist(),
        "outputs": [
            {"shape": list(probs.shape), "values": probs.flatten().tolist()},
            {"shape": list(cam.shape), "values": cam.flatten().tolist()},
        ],
        "torch": torch.__version__,
    },
    open(os.path.join(out, "tiny_expected.json"), "w"),
)
