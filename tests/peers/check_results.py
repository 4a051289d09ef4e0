"""Read result objects as a PACS-side consumer would: the SR through highdicom's TID 1500
parser, a rejection note through highdicom's Key Object Selection parser, the Secondary
Capture through pydicom, a Parametric Map through highdicom. Prints one JSON object per file.

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
    regions = []
    for g in report.get_planar_roi_measurement_groups():
        roi = g.roi
        entry = {
            "tracking": g.tracking_identifier,
            "tracking_uid": str(g.tracking_uid),
            "finding": [g.finding_type.value, g.finding_type.scheme_designator] if g.finding_type else None,
            "graphic_type": roi.graphic_type.value if roi is not None else None,
            "points": roi.value.tolist() if roi is not None else None,
            "measurements": [[m.name.meaning, m.value] for m in g.get_measurements()],
        }
        if roi is not None and roi.value_type.value == "SCOORD":
            entry["image"] = roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        elif roi is not None:
            entry["frame_of_reference"] = str(roi.ReferencedFrameOfReferenceUID)
        regions.append(entry)
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
        "regions": regions,
        "tracking_uids": [str(g.tracking_uid) for g in groups],
        "qualitative": root_evals,
        "evidence": [s.ReferencedSOPInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
        "predecessors": [s.ReferencedSOPInstanceUID for st in ds.get("PredecessorDocumentsSequence", []) for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
        "predecessor_study": [str(st.StudyInstanceUID) for st in ds.get("PredecessorDocumentsSequence", [])],
    }


def kos_summary(ds):
    """A rejection note (Key Object Selection) read through highdicom: title, what it rejects."""
    doc = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
    root = doc.content[0]
    title = root.ConceptNameCodeSequence[0]
    return {
        "template": ds.ContentTemplateSequence[0].TemplateIdentifier,
        "title": [title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning],
        "evidence": [str(s.ReferencedSOPInstanceUID) for st in ds.CurrentRequestedProcedureEvidenceSequence for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
        "evidence_study": [str(st.StudyInstanceUID) for st in ds.CurrentRequestedProcedureEvidenceSequence],
        "content": [[str(r.value_type.value), str(r.referenced_sop_class_uid), str(r.referenced_sop_instance_uid)] for r in doc.content.get_references()],
        "description": [str(ci.TextValue) for ci in root.ContentSequence if ci.ValueType == "TEXT" and ci.ConceptNameCodeSequence[0].CodeValue == "113012"],
    }


def pm_summary(ds):
    """A Parametric Map read through highdicom (which also checks its structure); the values
    through pydicom (highdicom 0.28's get_frame needs Pixel Representation, absent for float)."""
    pm = hd.pm.ParametricMap.from_dataset(ds)
    values = ds.pixel_array.astype("float64")
    shared = pm.SharedFunctionalGroupsSequence[0]
    rwvm = shared.RealWorldValueMappingSequence[0]
    quantity = [q.ConceptCodeSequence[0] for q in rwvm.get("QuantityDefinitionSequence", []) if "ConceptCodeSequence" in q]
    sources = []
    for frame in pm.PerFrameFunctionalGroupsSequence:
        for d in frame.get("DerivationImageSequence", []):
            for s in d.SourceImageSequence:
                sources.append([str(s.ReferencedSOPInstanceUID), str(s.PurposeOfReferenceCodeSequence[0].CodeValue)])
    return {
        "rows": int(pm.Rows), "columns": int(pm.Columns), "frames": int(pm.NumberOfFrames),
        "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
        "sources": sources,
        "referenced_instances": [str(i.ReferencedSOPInstanceUID) for se in pm.ReferencedSeriesSequence for i in se.ReferencedInstanceSequence],
        "frame_of_reference": str(pm.FrameOfReferenceUID),
        "content_label": str(pm.ContentLabel),
        "image_type": list(pm.ImageType),
        "pixel_presentation": str(pm.get("PixelPresentation", "")),
        "unit": [str(rwvm.MeasurementUnitsCodeSequence[0].CodeValue), str(rwvm.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator)],
        "quantity": [[str(q.CodeValue), str(q.CodingSchemeDesignator), str(q.CodeMeaning)] for q in quantity],
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
        elif ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59":
            out["kos"] = kos_summary(ds)
        elif ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30":
            out["pm"] = pm_summary(ds)
        else:
            out["sr"] = sr_summary(ds)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
