"""Read result objects as a PACS-side consumer would: the SR through highdicom's TID 1500
parser, the Secondary Capture through pydicom. Prints one JSON object per file.

    python check_results.py FILE...
"""
import json
import sys

import highdicom as hd
import pydicom


def sr_summary(ds):
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    report = sr.content  # highdicom parses the content tree
    if not isinstance(report, hd.sr.MeasurementReport):
        report = hd.sr.MeasurementReport.from_sequence(ds.ContentSequence)
    groups = report.get_image_measurement_groups()
    findings = []
    for g in groups:
        item = {
            "tracking": g.tracking_identifier,
            "finding": [g.finding_type.value, g.finding_type.scheme_designator, g.finding_type.meaning],
            "algorithm": [ci.TextValue for ci in g[0].ContentSequence if ci.ValueType == "TEXT" and ci.ConceptNameCodeSequence[0].CodeValue in ("111001", "111003")],
            "evaluations": [[e.name.meaning, e.value.value, e.value.scheme_designator] for e in g.get_qualitative_evaluations()],
            "measurements": [[m.name.meaning, m.value, m.unit.value] for m in g.get_measurements()],
            "source_images": [i.referenced_sop_instance_uid for i in g.source_images],
        }
        images = []
        for ci in g[0].ContentSequence:
            if ci.ValueType == "IMAGE":
                images.append([ci.ConceptNameCodeSequence[0].CodeMeaning, ci.ReferencedSOPSequence[0].ReferencedSOPInstanceUID])
        item["images"] = images
        findings.append(item)
    root_evals = []
    for ci in report[0].ContentSequence:
        if ci.ValueType == "CONTAINER" and ci.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations":
            for sub in ci.ContentSequence:
                if sub.ValueType == "CODE":
                    root_evals.append([sub.ConceptNameCodeSequence[0].CodeMeaning, sub.ConceptCodeSequence[0].CodeValue])
                elif sub.ValueType == "TEXT":
                    root_evals.append([sub.ConceptNameCodeSequence[0].CodeMeaning, sub.TextValue])
    return {
        "template": ds.ContentTemplateSequence[0].TemplateIdentifier,
        "observer": [c.observer_identifying_attributes.name for c in report.get_observer_contexts()] if hasattr(report, "get_observer_contexts") else [],
        "findings": findings,
        "qualitative": root_evals,
        "evidence": [s.ReferencedSOPInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
        "predecessors": [s.ReferencedSOPInstanceUID for st in ds.get("PredecessorDocumentsSequence", []) for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
        "predecessor_study": [str(st.StudyInstanceUID) for st in ds.get("PredecessorDocumentsSequence", [])],
    }


def main():
    for path in sys.argv[1:]:
        ds = pydicom.dcmread(path)
        out = {
            "file": path,
            "sop_class": str(ds.SOPClassUID),
            "sop_instance": str(ds.SOPInstanceUID),
            "patient_id": str(ds.get("PatientID", "")),
            "patient_name": str(ds.get("PatientName", "")),
            "study_uid": str(ds.StudyInstanceUID),
            "accession": str(ds.get("AccessionNumber", "")),
            "series_description": str(ds.get("SeriesDescription", "")),
            "modality": str(ds.Modality),
        }
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7":
            arr = ds.pixel_array
            out.update({
                "rows": int(ds.Rows), "columns": int(ds.Columns), "photometric": str(ds.PhotometricInterpretation),
                "burned_in": str(ds.BurnedInAnnotation), "shape": list(arr.shape),
                "source": [str(s.ReferencedSOPInstanceUID) for s in ds.SourceImageSequence],
                "coloured_pixels": int(((arr[..., 0].astype(int) - arr[..., 2].astype(int)) > 60).sum()),
            })
        else:
            out["sr"] = sr_summary(ds)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
