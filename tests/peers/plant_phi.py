"""Make DICOM files full of planted identifying values, for the de-identification tests.

  plant_phi.py study SRC OUT_DIR   two instances of one study made from the real file SRC. Every
      attribute of PS3.15 Table E.1-1 (read from src/deid/table_e1_1.tsv) with a text, date, time
      or UID value representation gets a unique value; sequences get an item holding more planted
      values; a private block gets planted strings. Instance 2 references instance 1 (Source Image
      Sequence) and shares its Frame of Reference. Prints one line per planted value:
      PLANTED <tag> <value>
  plant_phi.py sc SRC OUT   a Secondary Capture with no Burned In Annotation, from SRC's pixels.
"""
import os
import sys

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "src", "deid", "table_e1_1.tsv")
TEXT = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
counter = [0]
planted = []

# Attributes that must stay parseable for the node to accept the instance at all.
STRUCTURAL = {0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00020003}


def token():
    counter[0] += 1
    return f"PHI{counter[0]:04d}QZ"


def plant_value(tag, vr):
    if vr in TEXT:
        v = token()
        if vr == "AS":
            return None  # AS is 4 characters (nnnD): cannot hold a unique token
        if vr == "AE" or vr == "CS" or vr == "SH":
            v = v[:16]
        planted.append((tag, v))
        return v
    if vr == "DA":
        counter[0] += 1
        v = f"1923{(counter[0] % 12) + 1:02d}{(counter[0] % 27) + 1:02d}"
        return v  # dates are checked by value in the data set, not by byte search (they repeat)
    if vr == "DT":
        return "19230417101010"
    if vr == "TM":
        return "101010"
    if vr == "UI":
        counter[0] += 1
        v = f"1.2.826.0.1.3680043.10.999.{counter[0]}"
        planted.append((tag, v))
        return v
    return None


def nested_item():
    item = Dataset()
    item.PatientName = token()
    planted.append((0x00100010, item.PatientName))
    item.PatientID = token()
    planted.append((0x00100020, item.PatientID))
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    counter[0] += 1
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{counter[0]}"
    planted.append((0x00081155, item.ReferencedSOPInstanceUID))
    item.TextValue = token()
    planted.append((0x0040A160, item.TextValue))
    return item


def fill(ds):
    for line in open(TABLE):
        if line.startswith("#") or not line.strip():
            continue
        tag_hex = line.split("\t")[0]
        if "x" in tag_hex or tag_hex == "private":
            continue
        tag = int(tag_hex, 16)
        if tag >> 16 == 0x0002 or tag >> 16 == 0x0000 or tag in STRUCTURAL or tag >= 0xFFFA0000:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([nested_item()]))
            continue
        value = plant_value(tag, vr)
        if value is not None:
            ds.add_new(tag, vr, value)
    block = ds.private_block(0x0011, "PLANTED CREATOR", create=True)
    for i in range(3):
        v = token()
        block.add_new(0x10 + i, "LO", v)
        planted.append((0x00111010 + i, v))


def study(src, out_dir):
    base = pydicom.dcmread(src)
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    first_uid = None
    for n in (1, 2):
        ds = pydicom.dcmread(src)
        fill(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "PHIPATIENTIDQZ", "PHIFAMILYQZ^PHIGIVENQZ"
        ds.AccessionNumber, ds.PatientBirthDate, ds.PatientSex = "PHIACCQZ", "19230417", "F"
        ds.IssuerOfPatientID = "PHIISSUERQZ"
        ds.InstanceNumber = n
        if n == 2:
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = first_uid
            ds.SourceImageSequence = Sequence([ref])
        first_uid = first_uid or ds.SOPInstanceUID
        for uid in (ds.SOPInstanceUID, study_uid, series_uid, for_uid):
            planted.append((0, uid))
        ds.save_as(os.path.join(out_dir, f"planted_{n}.dcm"), enforce_file_format=True)
    for tag, value in planted:
        print(f"PLANTED {tag:08X} {value}")
    del base


def secondary_capture(src, out):
    ds = pydicom.dcmread(src)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ConversionType = "WSD"
    if "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation
    ds.save_as(out, enforce_file_format=True)


if __name__ == "__main__":
    if sys.argv[1] == "study":
        study(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sc":
        secondary_capture(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
