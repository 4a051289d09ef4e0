"""A tiny TorchScript segmenter for the segmentation test (tests/it/segmentation.rs):
outputs.kind = "segmentation" with a per-pixel probability mask.

    make_tiny_segmenter.py OUT.pt

Input [N, 1, H, W]; output mask [N, 2, H, W] of probabilities at the input size, labels
("background", "lesion"): lesion = sigmoid(200 * (brightness - (the image's brightest 9 x 9
neighbourhood - 0.02))) within about 10 pixels of that neighbourhood: a blob around the
brightest place (on the demo radiograph, near its lower edge);
background = 1 - lesion.
"""
import sys

import torch


class Segmenter(torch.nn.Module):
    def forward(self, x):
        n, _, h, w = x.shape
        smooth = torch.nn.functional.avg_pool2d(x[:, :1], 9, stride=1, padding=4, count_include_pad=False)
        peak, at = smooth.reshape(n, h * w).max(dim=1)
        cy = (at // w).float().reshape(n, 1, 1, 1)
        cx = (at % w).float().reshape(n, 1, 1, 1)
        ys = torch.arange(h, dtype=torch.float32).reshape(1, 1, h, 1)
        xs = torch.arange(w, dtype=torch.float32).reshape(1, 1, 1, w)
        near = torch.sigmoid(2.0 * (10.0 - torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)))
        lesion = near * torch.sigmoid(200.0 * (smooth - (peak.reshape(n, 1, 1, 1) - 0.02)))
        return torch.cat([1.0 - lesion, lesion], dim=1)


if __name__ == "__main__":
    torch.jit.script(Segmenter().eval()).save(sys.argv[1])
