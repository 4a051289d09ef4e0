"""Make hostile or leaky DICOM Part 10 files, for the de-identification and robustness tests.

  hostile.py KIND SRC OUT

SRC is a real CT file (explicit VR little endian, like pydicom-data's 693_UNCR.dcm; for rle-short an
RLE Lossless one, like .testdata/ts/ct_rle.dcm). OUT is the file to write. Every output keeps a valid
File Meta Information written by pydicom, with fresh Study, Series and SOP Instance UIDs (the last
matching Media Storage SOP Instance UID). For every identifying string planted the script prints
one line to stdout:

  PLANTED <tag, 8 hex digits> <value>       a unique token (HOSTILEknnnQZ) or UID
                                            (1.2.826.0.1.3680043.10.777.knn), to byte-search for
  PLANTEDDATE <tag> <value>                 a DA/DT value, to check by value in the data set

Tokens and UIDs have a fixed width, so none is a prefix of another, and carry the kind's number k,
so the kinds never share a value.

Kinds:
  un-sequence   two sequences encoded with VR UN (PS3.5 6.2.2): Referenced Study Sequence
                (0008,1110) with a defined length, Other Patient IDs Sequence (0010,1002) with an
                undefined length; their items are implicit VR little endian and hold planted values.
  after-pixels  ordinary header; after Pixel Data: (0010,0010), (0020,4000), a private block in
                group 0099 and (FFFC,FFFC) Data Set Trailing Padding, all raw and out of tag order.
  unlisted      attributes that PS3.15 Table E.1-1 does not list, plus (0002,0003) and (0002,0016)
                inside the data set (after the File Meta Information group has ended).
  wrong-vr      attributes sent with a VR their attribute does not have: Source Image Sequence
                (0008,2112) as OB (implicit VR items: a name, an instance UID), Anatomic Region
                Sequence (0008,2218) as OB (explicit VR items: a code and a name), SOP Instance
                UID of Concatenation Source (0020,0242) as LO, Frame of Reference UID (0020,0052) as
                SH; and unlisted free text: View Name (0008,2127).
  rle-short     RLE Lossless; the first fragment is cut so that its last segment is much shorter
                than Rows*Columns (or, with HOSTILE_RLE_MODE=offset, the last segment offset in the
                RLE header points past the fragment's end). The encapsulation stays well formed.
  deflate-bomb  Deflated Explicit VR Little Endian; the deflated data set is well under 2 MB but
                inflates to about HOSTILE_INFLATED_MIB MiB (default 512), almost all of it a private
                OB element (0009,1010) of zeros ahead of the real Pixel Data.

Only pydicom, numpy and the standard library are used. pydicom cannot represent a UN value holding
items, elements out of tag order, group 0002 elements in the data set, or a deflated data set that
we stream ourselves, so those parts are raw bytes spliced between data set parts pydicom encodes.
"""
import io
import os
import struct
import sys
import zlib

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

UID_ROOT = "1.2.826.0.1.3680043.10.777."
KIND_NUMBER = {"un-sequence": 1, "after-pixels": 2, "unlisted": 3, "rle-short": 4, "deflate-bomb": 5, "wrong-vr": 6}
PIXEL_DATA = 0x7FE00010
AFTER_EVERYTHING = 0x100000000  # a position key after every real tag

kind_no = [0]
counter = [0]


# ---------------------------------------------------------------------------------------------
# Planted values


def token(tag):
    """A unique 13-character ASCII token (fits AE/SH/CS), recorded as PLANTED."""
    counter[0] += 1
    v = f"HOSTILE{kind_no[0]}{counter[0]:03d}QZ"
    print(f"PLANTED {tag:08x} {v}")
    return v


def uid(tag):
    """A unique UID under 1.2.826.0.1.3680043.10.777., recorded as PLANTED."""
    counter[0] += 1
    v = f"{UID_ROOT}{kind_no[0]}{counter[0]:02d}"
    print(f"PLANTED {tag:08x} {v}")
    return v


def planted_date(tag, value):
    print(f"PLANTEDDATE {tag:08x} {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Raw element encoders (little endian)

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def pad(value, vr):
    """Bytes of a value padded to even length: UI and binary VRs with NUL, text with a space."""
    if isinstance(value, str):
        value = value.encode("ascii")
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    return value


def explicit_el(tag, vr, value):
    """One explicit VR little endian element with a defined length."""
    value = pad(value, vr)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def implicit_el(tag, vr, value):
    """One implicit VR little endian element (vr only picks the padding byte)."""
    value = pad(value, vr)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def item(body, defined_length=True):
    """An item (FFFE,E000): defined length, or undefined length closed by (FFFE,E00D)."""
    if defined_length:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
    return (struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + body
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))


SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


# ---------------------------------------------------------------------------------------------
# Data set handling


def load(src):
    """Read SRC, drop its retired group lengths and give it fresh Study/Series/SOP Instance UIDs."""
    ds = pydicom.dcmread(src)
    for tag in [t for t in ds.keys() if t.element == 0]:
        del ds[tag]
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    return ds


def meta_bytes(ds, transfer_syntax):
    """Preamble, 'DICM' and a File Meta Information group that matches ds, written by pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "HOSTILE_PY"
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def encode(ds, lo=0, hi=AFTER_EVERYTHING):
    """Explicit VR little endian bytes of ds's top-level elements with lo <= tag < hi."""
    part = Dataset()
    for elem in ds:
        if lo <= elem.tag < hi and elem.tag >> 16 != 0x0002:
            part.add(elem)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    # Strings of every part are encoded with the whole data set's Specific Character Set.
    write_dataset(fp, part, ds.get("SpecificCharacterSet", "iso8859"))
    return fp.getvalue()


def assemble(ds, inserts, transfer_syntax=ExplicitVRLittleEndian):
    """A whole Part 10 file: meta, then ds with raw bytes spliced in.

    inserts: list of (position, raw bytes); the raw bytes go after every element of ds whose tag is
    below position and before every element at or above it."""
    out = [meta_bytes(ds, transfer_syntax)]
    lo = 0
    for position, raw in sorted(inserts, key=lambda p: p[0]):
        out.append(encode(ds, lo, position))
        out.append(raw)
        lo = position
    out.append(encode(ds, lo))
    return b"".join(out)


def check_reads(path):
    """Re-read with pydicom (header and Pixel Data bytes); return the data set."""
    ds = pydicom.dcmread(path)
    _ = ds.PixelData
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    return ds


# ---------------------------------------------------------------------------------------------
# Kinds


def un_sequence(src, out):
    ds = load(src)
    for tag in (0x00081110, 0x00101002):
        if tag in ds:
            del ds[tag]

    # (a) Referenced Study Sequence as UN, defined length. Value = implicit VR LE items: one of
    # defined length, one of undefined length (closed by an item delimitation item).
    item1 = (implicit_el(0x00081150, "UI", "1.2.840.10008.3.1.2.3.1")  # Detached Study Mgmt
             + implicit_el(0x00081155, "UI", uid(0x00081155))
             + implicit_el(0x00100010, "PN", token(0x00100010)))
    item2 = (implicit_el(0x00081150, "UI", "1.2.840.10008.3.1.2.3.1")
             + implicit_el(0x00081155, "UI", uid(0x00081155))
             + implicit_el(0x00100010, "PN", token(0x00100010)))
    ref_study = explicit_el(0x00081110, "UN", item(item1, True) + item(item2, False))

    # (b) Other Patient IDs Sequence as UN, undefined length: one item of undefined length, then
    # a sequence delimitation item.
    body = (implicit_el(0x00100020, "LO", token(0x00100020))
            + implicit_el(0x00100021, "LO", token(0x00100021)))
    value = item(body, False) + SEQUENCE_DELIMITER
    other_ids = struct.pack("<HH2sHI", 0x0010, 0x1002, b"UN", 0, UNDEFINED) + value

    # (c) Referenced Image Sequence as UN, defined length: the profile keeps this one (X/Z/U*,
    # its UIDs replaced), so a de-identifier that does not read UN values keeps it raw.
    if 0x00081140 in ds:
        del ds[0x00081140]
    image_item = (implicit_el(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2")
                  + implicit_el(0x00081155, "UI", uid(0x00081155))
                  + implicit_el(0x00100010, "PN", token(0x00100010)))
    ref_image = explicit_el(0x00081140, "UN", item(image_item, True))

    # Each goes at its tag-sorted place (the position key is the element's own tag).
    data = assemble(ds, [(0x00081110, ref_study), (0x00081140, ref_image), (0x00101002, other_ids)])
    with open(out, "wb") as f:
        f.write(data)

    # Verify: as written (UN kept) and as pydicom would normally interpret it (UN -> SQ).
    pydicom.config.replace_un_with_known_vr = False
    try:
        raw = check_reads(out)
        assert raw[0x00081110].VR == "UN", raw[0x00081110].VR
        assert raw[0x00101002].VR in ("UN", "SQ"), raw[0x00101002].VR  # undefined-length UN reads as SQ
    finally:
        pydicom.config.replace_un_with_known_vr = True
    conv = check_reads(out)
    assert len(conv.ReferencedStudySequence) == 2
    assert conv.ReferencedStudySequence[0].ReferencedSOPInstanceUID.startswith(UID_ROOT)
    assert conv.OtherPatientIDsSequence[0].PatientID.startswith("HOSTILE")


def after_pixels(src, out):
    ds = load(src)
    trailing = (explicit_el(0x00100010, "PN", token(0x00100010))  # lower tag, out of order
                + explicit_el(0x00204000, "LT", token(0x00204000))
                + explicit_el(0x00990010, "LO", "HOSTILE CREATOR")
                + explicit_el(0x00991010, "LO", token(0x00991010))
                + explicit_el(0xFFFCFFFC, "OB", b"\0" * 8))
    with open(out, "wb") as f:
        f.write(assemble(ds, [(AFTER_EVERYTHING, trailing)]))
    check_reads(out)


def unlisted(src, out):
    ds = load(src)
    # Attributes that Table E.1-1 does not list.
    ds.add_new(0x00100033, "LO", token(0x00100033))  # Patient's Birth Date in Alternative Calendar
    ds.add_new(0x00100034, "LO", token(0x00100034))  # Patient's Death Date in Alternative Calendar
    ds.add_new(0x0008041F, "DT", planted_date(0x0008041F, "19230417101010"))  # Study Update DateTime
    ds.add_new(0x00081167, "UI", uid(0x00081167))  # Multi-frame Source SOP Instance UID
    ds.add_new(0x00200242, "UI", uid(0x00200242))  # SOP Instance UID of Concatenation Source
    # Group 0002 elements inside the data set, right after the meta group (whose group length
    # does not cover them), before group 0008.
    group2 = (explicit_el(0x00020003, "UI", uid(0x00020003))
              + explicit_el(0x00020016, "AE", token(0x00020016)))
    with open(out, "wb") as f:
        f.write(assemble(ds, [(0x00020000, group2)]))
    # pydicom reads every leading group 0002 element into file_meta, ignoring the group length,
    # so check the data set and the raw bytes instead of file_meta.
    back = pydicom.dcmread(out)
    _ = back.PixelData
    assert back.StudyUpdateDateTime == "19230417101010"
    assert back[0x00200242].value.startswith(UID_ROOT)


def wrong_vr(src, out):
    ds = load(src)
    for tag in (0x00082112, 0x00082218, 0x00200242, 0x00082127, 0x00200052):
        if tag in ds:
            del ds[tag]
    source_item = (implicit_el(0x00081150, "UI", "1.2.840.10008.5.1.4.1.1.2")
                   + implicit_el(0x00081155, "UI", uid(0x00081155))
                   + implicit_el(0x00100010, "PN", token(0x00100010)))
    source = explicit_el(0x00082112, "OB", item(source_item, True))
    region_item = (explicit_el(0x00080100, "SH", "T-D3000")
                   + explicit_el(0x00080102, "SH", "SRT")
                   + explicit_el(0x00080104, "LO", "Chest")
                   + explicit_el(0x0040A123, "PN", token(0x0040A123)))
    region = explicit_el(0x00082218, "OB", item(region_item, True))
    concatenation = explicit_el(0x00200242, "LO", uid(0x00200242))
    view = explicit_el(0x00082127, "SH", token(0x00082127))
    frame = explicit_el(0x00200052, "SH", uid(0x00200052))  # Frame of Reference UID as SH
    data = assemble(ds, [(0x00082112, source), (0x00082127, view), (0x00082218, region),
                         (0x00200052, frame), (0x00200242, concatenation)])
    with open(out, "wb") as f:
        f.write(data)
    back = check_reads(out)
    assert back[0x00082112].VR == "OB", back[0x00082112].VR
    assert back[0x00200242].VR == "LO", back[0x00200242].VR


def split_encapsulated(value):
    """(Basic Offset Table bytes, [fragments]) from an encapsulated Pixel Data value."""
    items = []
    pos = 0
    while pos + 8 <= len(value):
        group, elem, length = struct.unpack_from("<HHI", value, pos)
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        assert (group, elem) == (0xFFFE, 0xE000), f"not an item at {pos}"
        items.append(value[pos + 8:pos + 8 + length])
        pos += 8 + length
    return items[0], items[1:]


def rle_short(src, out):
    ds = load(src)
    assert ds.file_meta.TransferSyntaxUID == RLELossless, "SRC must be RLE Lossless"
    bot, fragments = split_encapsulated(ds.PixelData)
    frag = fragments[0]
    nseg = struct.unpack_from("<I", frag, 0)[0]
    offsets = list(struct.unpack_from("<15I", frag, 4))[:nseg]
    rows, cols = ds.Rows, ds.Columns
    mode = os.environ.get("HOSTILE_RLE_MODE", "short")
    if mode == "offset":
        # The header's last offset points past the end of the fragment; the fragment is unchanged.
        header = bytearray(frag[:64])
        struct.pack_into("<I", header, 4 + 4 * (nseg - 1), len(frag) + 0x10000)
        frag = bytes(header) + frag[64:]
    else:
        # Keep the header and every segment but the last; keep only 32 bytes of the last one (it
        # decodes to far fewer than Rows*Columns bytes; the cut falls inside a run). Even length.
        keep = offsets[-1] + 32
        assert keep < len(frag), "the last segment is already tiny"
        frag = frag[:keep]
    fragments = [frag] + fragments[1:]

    # Rebuild: the Basic Offset Table (if it had entries) gets offsets for the new fragment sizes,
    # one frame per fragment as in pydicom-written and dcmtk-written RLE files.
    if bot:
        new_offsets, at = [], 0
        for fr in fragments:
            new_offsets.append(at)
            at += 8 + len(fr) + len(fr) % 2
        bot = struct.pack(f"<{len(new_offsets)}I", *new_offsets[:len(bot) // 4])
    value = item(bot) + b"".join(item(pad(fr, "OB")) for fr in fragments)
    ds.PixelData = value
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with open(out, "wb") as f:
        f.write(assemble(ds, [], RLELossless))

    back = check_reads(out)
    b2, f2 = split_encapsulated(back.PixelData)
    assert f2[0][:64] == frag[:64] and len(f2) == len(fragments)
    print(f"# rle-short: {nseg} segments, offsets {offsets}, first fragment now {len(frag)} bytes,"
          f" mode {mode}, {rows}x{cols}", file=sys.stderr)


def deflate_bomb(src, out):
    ds = load(src)
    mib = int(os.environ.get("HOSTILE_INFLATED_MIB", "512"))
    total = mib * 1024 * 1024
    # Private block 0009: creator, then one or more OB elements of zeros (at most 1 GiB each, to
    # stay within a 32-bit length). Written by hand so the zeros never sit in memory at once.
    creator = explicit_el(0x00090010, "LO", "HOSTILE BOMB")
    chunk_max = 1024 * 1024 * 1024
    sizes = []
    while total > 0:
        sizes.append(min(total, chunk_max))
        total -= sizes[-1]
    for tag in [t for t in ds.keys() if t.group == 0x0009]:
        del ds[tag]

    header = encode(ds, 0, 0x00090010)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as PS3.5 A.5 requires
    zeros = b"\0" * (1024 * 1024)
    with open(out, "wb") as f:
        f.write(meta_bytes(ds, DeflatedExplicitVRLittleEndian))
        f.write(comp.compress(header + creator))
        for i, size in enumerate(sizes):
            f.write(comp.compress(struct.pack("<HH2sHI", 0x0009, 0x1010 + i, b"OB", 0, size)))
            left = size
            while left:
                n = min(left, len(zeros))
                f.write(comp.compress(zeros[:n]))
                left -= n
        f.write(comp.compress(encode(ds, 0x000A0000)))
        f.write(comp.flush())
    print(f"# deflate-bomb: {os.path.getsize(out)} bytes on disk, private zeros {sizes}",
          file=sys.stderr)

    # Check: the meta reads, and the first few KB inflate to the CT header.
    meta = pydicom.filereader.read_file_meta_info(out)
    assert meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    with open(out, "rb") as f:
        f.seek(132 + 12 + meta.FileMetaInformationGroupLength)
        head = zlib.decompressobj(-15).decompress(f.read(8192), 8192)
    assert head[:len(header)] == header and head[len(header):].startswith(creator)
    part = pydicom.dcmread(io.BytesIO(head[:len(header)]), force=True)
    assert part.SOPInstanceUID == meta.MediaStorageSOPInstanceUID


KINDS = {
    "un-sequence": un_sequence,
    "after-pixels": after_pixels,
    "unlisted": unlisted,
    "rle-short": rle_short,
    "deflate-bomb": deflate_bomb,
    "wrong-vr": wrong_vr,
}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in KINDS:
        sys.exit(__doc__)
    kind_no[0] = KIND_NUMBER[sys.argv[1]]
    KINDS[sys.argv[1]](sys.argv[2], sys.argv[3])
