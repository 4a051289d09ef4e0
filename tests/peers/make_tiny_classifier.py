"""A tiny TorchScript classifier without a class activation map, for the saliency test
(tests/it/saliency.rs): two labels; "spot" is positive on any image, and its output depends only
on the top-right 32 x 32 pixels of the 128 x 128 input; "other" depends on the whole image and
is never positive.

    make_tiny_classifier.py OUT.pt

Input [N, 1, 128, 128] in 0..1; output logits [N, 2] (the manifest applies the sigmoid):
  spot  = 3 + 10 * mean(x[:, :, 0:32, 96:128])
  other = -20 + mean(x)
"""
import sys

import torch


class Classifier(torch.nn.Module):
    def forward(self, x):
        spot = 3.0 + 10.0 * x[:, 0, 0:32, 96:128].mean(dim=(1, 2))
        other = -20.0 + x[:, 0].mean(dim=(1, 2))
        return torch.stack([spot, other], dim=1)


torch.jit.script(Classifier().eval()).save(sys.argv[1])
