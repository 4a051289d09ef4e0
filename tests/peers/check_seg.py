"""Reads a DICOM Segmentation back with highdicom, as a viewer would (tests/it/segmentation.rs).

    check_seg.py SEG.dcm OUT.npy [SR.dcm]

Prints JSON: the segmentation type, per segment its number, label, property type code and
algorithm; the source images; and per segment the mask highdicom gives for the first source
image (as fractions 0..1): its bounding box where it is at least 0.5 (rows, columns) and its
sum. The first segment's mask is saved to OUT.npy (float32, rows x columns). With an SR, its
planar and volumetric ROI groups as highdicom's TID 1500 parser finds them: tracking identifier,
template, the referenced SOP instance, segment number and frame, and the measurements.
"""
import json
import sys

import highdicom as hd
import numpy as np
import pydicom

ds = pydicom.dcmread(sys.argv[1])
seg = hd.seg.Segmentation.from_dataset(ds)
sources = [s.ReferencedSOPInstanceUID for s in ds.SourceImageSequence]
out = {
    "type": seg.segmentation_type.value,
    "fractional_type": ds.get("SegmentationFractionalType"),
    "sources": sources,
    "segments": [],
}
for number in seg.segment_numbers:
    d = seg.get_segment_description(number)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sources[:1],
        segment_numbers=[number],
        combine_segments=False,
        rescale_fractional=True,
    )[0, :, :, 0].astype(np.float32)
    inside = np.argwhere(pixels >= 0.5)
    box = [int(v) for v in (*inside.min(axis=0), *inside.max(axis=0))] if len(inside) else None
    out["segments"].append({
        "number": int(number),
        "label": d.segment_label,
        "type": [d.segmented_property_type.value, d.segmented_property_type.scheme_designator],
        "algorithm_type": d.algorithm_type.value,
        "algorithm": d.get("SegmentAlgorithmName"),
        "box": box,
        "sum": float(pixels.sum()),
        "inside": int(len(inside)),
    })
    if number == seg.segment_numbers[0]:
        np.save(sys.argv[2], pixels)
if len(sys.argv) > 3:
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(sys.argv[3])).content
    if not isinstance(report, hd.sr.MeasurementReport):
        report = hd.sr.MeasurementReport.from_sequence(pydicom.dcmread(sys.argv[3]).ContentSequence)
    groups = []
    for template, found in (("1410", report.get_planar_roi_measurement_groups()), ("1411", report.get_volumetric_roi_measurement_groups())):
        for g in found:
            entry = {"template": template, "tracking": g.tracking_identifier, "measurements": [[m.name.meaning, m.value, m.unit.value] for m in g.get_measurements()]}
            for ci in g[0].ContentSequence:
                if ci.ValueType == "IMAGE":
                    r = ci.ReferencedSOPSequence[0]
                    # The segment reference, and (TID 1410) the image it was segmented from.
                    key = "source_image" if ci.ConceptNameCodeSequence[0].CodeValue == "121233" else "image"
                    entry[key] = [ci.ConceptNameCodeSequence[0].CodeMeaning, r.ReferencedSOPInstanceUID, int(r.get("ReferencedSegmentNumber", 0)), int(r.get("ReferencedFrameNumber", 0))]
            groups.append(entry)
    out["sr_groups"] = groups
print(json.dumps(out))
