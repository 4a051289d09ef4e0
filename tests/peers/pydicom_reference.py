"""Reference pixel arrays from pydicom, for the Rust preprocessing tests.

  pydicom_reference.py FILE OUT_PREFIX
writes OUT_PREFIX.modality.f32 (Modality LUT applied: pydicom.pixels.apply_modality_lut),
OUT_PREFIX.voi.f32 (then the file's first VOI window: pydicom.pixels.apply_voi_lut), both raw
little-endian float32 in frame, row, column order, and prints the shape and photometric.
"""
import sys

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

ds = pydicom.dcmread(sys.argv[1])
out = sys.argv[2]
modality = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
voi = apply_voi_lut(modality, ds, index=0)
modality.astype("<f4").tofile(out + ".modality.f32")
np.asarray(voi, dtype="<f4").tofile(out + ".voi.f32")
frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
print(frames, ds.Rows, ds.Columns, ds.PhotometricInterpretation, flush=True)
