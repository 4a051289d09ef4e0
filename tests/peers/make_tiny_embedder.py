"""A tiny TorchScript classifier with an embedding output, for the similar-cases test
(tests/it/similar.rs), and the studies it is run on.

    make_tiny_embedder.py OUT.pt              the model
    make_tiny_embedder.py --studies OUT_DIR   the studies: one CR each, printed `MADE name path`

Model: input [N, 1, 64, 64] in 0..1; outputs (probabilities [N, 1], cam [N, 1, 4, 4],
embedding [N, 16]): the embedding is the 16 means of the 4 x 4 blocks of 16 x 16 pixels (minus
their overall mean, so a uniform brightness change does not move it), the probability of
"finding" is always 0.99 (every study positive), the map is the block means.

Studies: each a 64 x 64 CR whose 4 x 4 blocks have the brightness of a pattern: `query` a
pattern, `near1` and `near2` the same pattern with a little noise (planted near-duplicates),
`far1`..`far4` other patterns, `unconfirmed` the query's own pattern (never confirmed by a
reader), each of its own patient PATIENT^<NAME>.
"""
import os
import sys

import numpy as np
import torch


class Embedder(torch.nn.Module):
    def forward(self, x):
        blocks = torch.nn.functional.avg_pool2d(x, 16)  # [N, 1, 4, 4]
        flat = blocks.flatten(1)
        emb = flat - flat.mean(dim=1, keepdim=True)
        p = torch.full((x.shape[0], 1), 0.99)
        return p, blocks, emb


def studies(out):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(7)
    base = rng.integers(0, 4096, size=(4, 4))
    patterns = {"query": base, "unconfirmed": base}
    for i in (1, 2):
        patterns[f"near{i}"] = np.clip(base + rng.integers(-60, 60, size=(4, 4)), 0, 4095)
    for i in range(1, 5):
        patterns[f"far{i}"] = rng.integers(0, 4096, size=(4, 4))
    os.makedirs(out, exist_ok=True)
    # Received in this order: the confirmed ones before the query, the unconfirmed one too.
    for n, (name, blocks) in enumerate(sorted(patterns.items(), key=lambda kv: (kv[0] == "query", kv[0]))):
        pixels = np.kron(blocks, np.ones((16, 16))).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName = f"PATIENT^{name.upper()}"
        ds.PatientID = f"PID{name.upper()}"
        ds.AccessionNumber = f"ACC{n}"
        ds.Modality = "CR"
        # Declared: a CR without it is held back unread (`deid.burned_in_when_absent`).
        ds.BurnedInAnnotation = "NO"
        ds.StudyDate = "20260101"
        ds.Rows, ds.Columns = 64, 64
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = pixels.tobytes()
        path = os.path.join(out, f"{n:02d}_{name}.dcm")
        ds.save_as(path, enforce_file_format=True)
        print("MADE", name, path)


if sys.argv[1] == "--studies":
    studies(sys.argv[2])
else:
    torch.jit.script(Embedder().eval()).save(sys.argv[1])
