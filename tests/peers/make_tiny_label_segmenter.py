"""The tiny segmenter of make_tiny_segmenter.py giving a label map instead of probabilities
(outputs.mask_format = "labels"): [N, 1, H, W], each pixel 1 ("lesion") where the lesion
probability is at least 0.5, else 0 ("background").

    make_tiny_label_segmenter.py OUT.pt
"""
import importlib.util
import os
import sys

import torch

spec = importlib.util.spec_from_file_location("tiny", os.path.join(os.path.dirname(__file__), "make_tiny_segmenter.py"))
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)


class LabelSegmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny.Segmenter()

    def forward(self, x):
        lesion = self.inner(x)[:, 1:2]
        return (lesion >= 0.5).float()


torch.jit.script(LabelSegmenter().eval()).save(sys.argv[1])
