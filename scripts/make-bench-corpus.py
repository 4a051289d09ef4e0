"""Generate the ingest benchmark corpus from real files shipped in pydicom-data.

  ct/   N CT instances, 512x512x16 bit (the real head CT 693_UNCR, new UIDs, one study)
  dx/   M DX For Presentation instances, 2500x2500x16 bit (the real chest CR RG1_UNCR,
        resampled and wrapped as DX), one study
  big/  one ~200 MB DX instance (10000x10000x16 bit) for the memory measurement
  par/K/  with --senders K: K series of --per-sender CT slices each (own study, own UIDs), one
        per concurrent sender of the concurrency runs
"""
import argparse
import os

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
import data_store

SRC = os.path.join(os.path.dirname(data_store.__file__), "data")
DX = "1.2.840.10008.5.1.4.1.1.1.1"


def save(ds, path):
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def make_ct(out, n):
    os.makedirs(out, exist_ok=True)
    ds = pydicom.dcmread(os.path.join(SRC, "693_UNCR.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for i in range(n):
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        save(ds, os.path.join(out, f"ct_{i:04d}.dcm"))


def as_dx(size):
    cr = pydicom.dcmread(os.path.join(SRC, "RG1_UNCR.dcm"))
    src = cr.pixel_array
    rows = np.linspace(0, src.shape[0] - 1, size).astype(int)
    cols = np.linspace(0, src.shape[1] - 1, size).astype(int)
    pixels = np.ascontiguousarray(src[rows][:, cols]).astype(np.uint16)
    ds = cr
    ds.SOPClassUID = DX
    ds.Modality = "DX"
    ds.Rows, ds.Columns = size, size
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelData = pixels.tobytes()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    return ds


def make_dx(out, m, size):
    os.makedirs(out, exist_ok=True)
    ds = as_dx(size)
    for i in range(m):
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        save(ds, os.path.join(out, f"dx_{i:03d}.dcm"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--ct", type=int, default=300)
    p.add_argument("--dx", type=int, default=30)
    p.add_argument("--no-big", action="store_true", help="skip the 200 MB instance")
    p.add_argument("--senders", type=int, default=0, help="sets for this many concurrent senders")
    p.add_argument("--per-sender", type=int, default=150)
    a = p.parse_args()
    for k in range(a.senders):
        make_ct(os.path.join(a.out, "par", str(k)), a.per_sender)
    if a.senders:
        return
    make_ct(os.path.join(a.out, "ct"), a.ct)
    if a.dx:
        make_dx(os.path.join(a.out, "dx"), a.dx, 2500)
    if not a.no_big:
        make_dx(os.path.join(a.out, "big"), 1, 10000)


if __name__ == "__main__":
    main()
