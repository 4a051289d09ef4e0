"""A tiny TorchScript detector for the detection tests (tests/it/detection.rs): outputs.kind =
"detection" with boxes, scores and box labels.

    make_tiny_detector.py OUT.pt

Input [N, 1, H, W]; outputs (boxes [N, 3, 4] as x0, y0, x1, y1 in input pixels, scores [N, 3],
labels [N, 3] int64):
  box 0: a 16 x 16 square centred on the brightest 9 x 9 neighbourhood of the image (score 0.97);
  box 1: a fixed box, x 8..40, y 100..120 (score 0.6), whose place on the source is known;
  box 2: padding (score 0).
"""
import sys

import torch


class Detector(torch.nn.Module):
    def forward(self, x):
        n, _, h, w = x.shape
        smooth = torch.nn.functional.avg_pool2d(x[:, :1], 9, stride=1, padding=4)
        flat = smooth.reshape(n, h * w).argmax(dim=1)
        cy = (flat // w).float() + 0.5
        cx = (flat % w).float() + 0.5
        bright = torch.stack([cx - 8.0, cy - 8.0, cx + 8.0, cy + 8.0], dim=1)
        fixed = torch.tensor([8.0, 100.0, 40.0, 120.0]).expand(n, 4)
        pad = torch.zeros(n, 4)
        boxes = torch.stack([bright, fixed, pad], dim=1)
        scores = torch.tensor([0.97, 0.6, 0.0]).expand(n, 3).contiguous()
        labels = torch.zeros(n, 3, dtype=torch.int64)
        return boxes, scores, labels


torch.jit.script(Detector().eval()).save(sys.argv[1])
