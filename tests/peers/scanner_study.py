"""What real modalities send, built from the real files of the registry packages (pydicom's
test files, pydicom-data): a CT scanner's study (axial series, a thick axial series, a
localizer, an X-Ray Radiation Dose SR, a dose-screen Secondary Capture, a Key Object Selection
and a Grayscale Softcopy Presentation State) and the other rooms' objects (MG, XA, NM, US, SEG,
RT Dose, RT Plan, a 12-lead ECG, a Comprehensive SR, an encapsulated PDF).

Every object carries the same planted identity (PLANTED...) in its header and, where it has
content outside the header (SR content items, the PDF's bytes, waveform annotations, the
presentation state's text), in that content too, so a test can search the node's data directory
for it. Prints one line per file: `MADE <kind> <path>`.

usage: scanner_study.py OUT_DIR
"""
import copy
import os
import sys

import pydicom
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PATIENT = {"PatientName": "PLANTED^SCANNERPATIENT", "PatientID": "PLANTEDPID1", "PatientBirthDate": "19230417", "AccessionNumber": "PLANTEDACC1"}


def src(name):
    path = pydicom.data.get_testdata_file(name)
    if path is None:
        raise SystemExit(f"{name} is not in the registry packages")
    return pydicom.dcmread(path)


def identify(ds, study, series, modality=None, number=1):
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    if modality:
        ds.Modality = modality
    ds.ReferringPhysicianName = "PLANTED^REFERRER"
    ds.InstitutionName = "PLANTED HOSPITAL"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def reclass(ds, sop_class):
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    return ds


def planted_content(ds):
    """A TEXT and a PNAME content item, appended to the SR's content tree."""
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121106", "DCM", "Comment"
    text.ConceptNameCodeSequence = [code]
    text.TextValue = "PLANTEDCONTENT seen by Dr PLANTED^SRAUTHOR"
    person = Dataset()
    person.RelationshipType = "HAS OBS CONTEXT"
    person.ValueType = "PNAME"
    pcode = Dataset()
    pcode.CodeValue, pcode.CodingSchemeDesignator, pcode.CodeMeaning = "121008", "DCM", "Person Observer Name"
    person.ConceptNameCodeSequence = [pcode]
    person.PersonName = "PLANTED^OBSERVER"
    seq = list(ds.get("ContentSequence", []))
    ds.ContentSequence = seq + [text, person]
    return ds


def new_dataset(sop_class, modality):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261201", "101500", "1"
    ds.SeriesNumber = 99
    return ds


def main(out):
    os.makedirs(out, exist_ok=True)
    made = []

    def save(kind, ds):
        path = os.path.join(out, f"{len(made):02d}_{kind}.dcm")
        ds.save_as(path, enforce_file_format=True)
        made.append((kind, path))
        print("MADE", kind, path, flush=True)

    study = generate_uid()
    # The CT scanner's study. Axial images: real CT slices (CT_small), 1 mm apart.
    axial, thick, scout = generate_uid(), generate_uid(), generate_uid()
    for i in range(6):
        ds = identify(src("CT_small.dcm"), study, axial, "CT", i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ConvolutionKernel = "SOFT"
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.SeriesDescription = "Head 1.0 soft"
        save("ct-axial", ds)
    for i in range(3):
        ds = identify(src("CT_small.dcm"), study, thick, "CT", i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "5.0"
        ds.ConvolutionKernel = "BONE"
        ds.ImagePositionPatient = [0, 0, float(5 * i)]
        ds.SeriesDescription = "Head 5.0 bone"
        save("ct-thick", ds)
    ds = identify(src("CT_small.dcm"), study, scout, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "Topogram"
    save("ct-localizer", ds)
    # The dose report and the dose screen.
    ds = planted_content(reclass(identify(src("test-SR.dcm"), study, generate_uid(), "SR"), "1.2.840.10008.5.1.4.1.1.88.67"))
    save("dose-sr", ds)
    ds = identify(src("SC_rgb_small_odd.dcm"), study, generate_uid(), "CT")
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.BurnedInAnnotation = "YES"
    save("dose-screen", ds)
    ds = planted_content(reclass(identify(src("test-SR.dcm"), study, generate_uid(), "KO"), "1.2.840.10008.5.1.4.1.1.88.59"))
    save("kos", ds)
    ds = identify(new_dataset("1.2.840.10008.5.1.4.1.1.11.1", "PR"), study, generate_uid(), "PR")
    ds.ContentLabel = "ANNOTATIONS"
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20261201", "102000"
    ds.ContentCreatorName = "PLANTED^PRESENTER"
    text = Dataset()
    text.UnformattedTextValue = "PLANTEDCONTENT arrow label"
    text.AnchorPointAnnotationUnits = "PIXEL"
    layer = Dataset()
    layer.GraphicLayer = "LAYER1"
    layer.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [layer]
    save("gsps", ds)

    # The other rooms' objects, another study.
    other = generate_uid()
    for kind, sop_class, modality in [
        ("mg", "1.2.840.10008.5.1.4.1.1.1.2", "MG"),
        ("xa", "1.2.840.10008.5.1.4.1.1.12.1", "XA"),
        ("nm", "1.2.840.10008.5.1.4.1.1.20", "NM"),
        ("breast-tomo", "1.2.840.10008.5.1.4.1.1.13.1.3", "MG"),
    ]:
        ds = reclass(identify(src("CT_small.dcm"), other, generate_uid(), modality), sop_class)
        save(kind, ds)
    for kind, name in [("us", "US1_UNCR.dcm"), ("seg", "liver_1frame.dcm"), ("rt-dose", "rtdose_1frame.dcm"), ("rt-plan", "rtplan.dcm"), ("ecg", "waveform_ecg.dcm")]:
        ds = identify(src(name), other, generate_uid())
        save(kind, ds)
    ds = planted_content(identify(src("test-SR.dcm"), other, generate_uid(), "SR"))
    save("sr", ds)
    ds = identify(new_dataset("1.2.840.10008.5.1.4.1.1.104.1", "DOC"), other, generate_uid(), "DOC")
    ds.ConversionType = "SD"
    ds.DocumentTitle = "Report of PLANTED^SCANNERPATIENT"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "18748-4", "LN", "Diagnostic imaging study"
    ds.ConceptNameCodeSequence = [code]
    pdf = b"%PDF-1.4\n1 0 obj << /Title (PLANTEDCONTENT PLANTED^SCANNERPATIENT) >> endobj\n%%EOF\n"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    save("pdf", ds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
