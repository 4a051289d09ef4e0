"""A synthetic axial CT series for the slab and volume tests (tests/it/volume.rs, and
scripts/bench-volume.sh): N slices of R x R pixels, Image Position (Patient) z = i * SPACING mm,
-1000 HU (air) except the BRIGHT slices of highest z, 1000 HU. Instance Numbers run the other
way (the highest z is instance 1) and the files are named by Instance Number, so a node that
ordered slices by Instance Number or by arrival would read the series upside down.

    make_ct_series.py OUT_DIR N SPACING BRIGHT [--rows R] [--skip I] [--compressed]

--skip I leaves slice I out (a missing slice: a gap of two spacings). Prints the study UID.
"""
import argparse
import os

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("spacing", type=float)
    p.add_argument("bright", type=int)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--skip", type=int, default=None)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for i in range(a.n):
        if i == a.skip:
            continue
        hu = 1000 if i >= a.n - a.bright else -1000
        pixels = np.full((a.rows, a.rows), hu + 1024, dtype=np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "VOLUME^TEST", "VOL1", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "VOLACC1", "1"
        ds.Modality, ds.BodyPartExamined, ds.SeriesNumber = "CT", "HEAD", 2
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        number = a.n - i
        ds.InstanceNumber = number
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-0.5 * a.rows, -0.5 * a.rows, round(i * a.spacing, 4)]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = a.spacing
        ds.Rows = ds.Columns = a.rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels.tobytes()
        ds.save_as(os.path.join(a.out, f"{number:04d}.dcm"), enforce_file_format=True)
    print(study)


main()
