"""Compare a Parametric Map's values with the activation map a node stored for the finding:
highdicom reads the map, torch resamples the stored activation onto the map's grid the way the
node says it does (bilinear, align_corners=False). Prints one JSON object.

    python compare_map.py MAP.dcm ACTIVATION.json
        (JSON: {"rows": R, "cols": C, "frames": [[...], ...]}: one activation map per frame, in order)
"""
import json
import sys

import highdicom as hd
import numpy as np
import pydicom
import torch


def main():
    ds = pydicom.dcmread(sys.argv[1])
    pm = hd.pm.ParametricMap.from_dataset(ds)
    with open(sys.argv[2]) as f:
        activation = json.load(f)
    values = ds.pixel_array.astype(np.float64)
    if values.ndim == 2:
        values = values[None]
    if len(activation["frames"]) != values.shape[0]:
        sys.exit(f"{values.shape[0]} frames, {len(activation['frames'])} activation maps")
    cam = torch.tensor(activation["frames"], dtype=torch.float32).reshape(-1, 1, activation["rows"], activation["cols"])
    expected = torch.nn.functional.interpolate(cam, size=values.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy()
    # Real World Value Mapping: identity for a float map, applied if present.
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    slope, intercept = float(rwvm.RealWorldValueSlope), float(rwvm.RealWorldValueIntercept)
    mapped = values * slope + intercept
    print(json.dumps({
        "sop_class": str(ds.SOPClassUID),
        "frames": int(values.shape[0]),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "max_abs_difference": float(np.abs(mapped - expected).max()),
        "peak": [int(i) for i in np.unravel_index(np.argmax(mapped[0]), mapped[0].shape)],
        "frame_sources": [str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID) for f in ds.PerFrameFunctionalGroupsSequence],
        "highdicom_class": type(pm).__name__,
        "unit": rwvm.MeasurementUnitsCodeSequence[0].CodeValue,
        "frame_of_reference": str(ds.FrameOfReferenceUID),
        "source": sorted({str(s.ReferencedSOPInstanceUID) for g in [ds.SharedFunctionalGroupsSequence[0], *ds.PerFrameFunctionalGroupsSequence]
                          for d in g.get("DerivationImageSequence", []) for s in d.SourceImageSequence}),
    }))


if __name__ == "__main__":
    main()
