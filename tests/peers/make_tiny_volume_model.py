"""Tiny TorchScript models for the slab and volume tests (tests/it/volume.rs):

    make_tiny_volume_model.py volume OUT.pt   # input [N, 1, D, H, W]
    make_tiny_volume_model.py slab OUT.pt     # input [N, 3, H, W]

volume: probabilities [N, 2] ("top", "bottom") = the mean of the input's upper half along D
(the slices of highest position, if the node orders them along the normal) and of its lower
half; a 3D map [N, 2, D, H, W] = the input, for both labels.
slab: probabilities [N, 1] = clamp(mean(channel 2) - mean(channel 0), 0, 1): high where the
slice above the centre is bright and the one below dark; no map.
"""
import sys

import torch


class Volume(torch.nn.Module):
    def forward(self, x):
        d = x.shape[2]
        top = x[:, :, d // 2 :].mean(dim=(1, 2, 3, 4))
        bottom = x[:, :, : d // 2].mean(dim=(1, 2, 3, 4))
        return torch.stack([top, bottom], dim=1), torch.cat([x, x], dim=1)


class Slab(torch.nn.Module):
    def forward(self, x):
        p = (x[:, 2].mean(dim=(1, 2)) - x[:, 0].mean(dim=(1, 2))).clamp(0.0, 1.0)
        return p.reshape(-1, 1)


model = Volume() if sys.argv[1] == "volume" else Slab()
torch.jit.script(model.eval()).save(sys.argv[2])
