"""A tiny TorchScript segmenter for the segmentation test (tests/it/segmentation.rs):
outputs.kind = "segmentation" with a per-pixel probability mask.

    make_tiny_segmenter.py OUT.pt

Input [N, 1, H, W]; output mask [N, 2, H, W] of probabilities at the input size, labels
("background", "lesion"): lesion = sigmoid(200 * (brightness - (the image's brightest 9 x 9
neighbourhood - 0.02))), a blob around the brightest place (the demo radiograph's nodule);
background = 1 - lesion.
"""
import sys

import torch


class Segmenter(torch.nn.Module):
    def forward(self, x):
        n = x.shape[0]
        smooth = torch.nn.functional.avg_pool2d(x[:, :1], 9, stride=1, padding=4, count_include_pad=False)
        peak = smooth.reshape(n, -1).max(dim=1).values.reshape(n, 1, 1, 1)
        lesion = torch.sigmoid(200.0 * (smooth - (peak - 0.02)))
        return torch.cat([1.0 - lesion, lesion], dim=1)


torch.jit.script(Segmenter().eval()).save(sys.argv[1])
