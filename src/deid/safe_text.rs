//! The reviewed list of free-text attributes (LO, SH, LT, ST, UT, UC, UR) that Table E.1-1 does
//! not list and that are kept as sent: each names a code, a device, a technique or a display
//! choice, never an instance's narrative. Any other unlisted free text is where identity hides
//! in real files (a View Name of "SMITH PA", a Transducer Data note, a later edition's comment)
//! and gets a dummy. The conformance statement (section 5, table `safe-text`) lists exactly
//! these; a test holds the two equal.

use dicom_core::Tag;

/// (tag, keyword): the keyword as PS3.6 spells it.
pub const SAFE_TEXT: [(Tag, &str); 31] = [
    // The parts of a code (PS3.3 Table 8.8-1): what a coded concept is, never who.
    (Tag(0x0008, 0x0100), "CodeValue"),
    (Tag(0x0008, 0x0102), "CodingSchemeDesignator"),
    (Tag(0x0008, 0x0103), "CodingSchemeVersion"),
    (Tag(0x0008, 0x0104), "CodeMeaning"),
    (Tag(0x0008, 0x0115), "CodingSchemeName"),
    (Tag(0x0008, 0x0116), "CodingSchemeResponsibleOrganization"),
    (Tag(0x0008, 0x0119), "LongCodeValue"),
    (Tag(0x0008, 0x0120), "URNCodeValue"),
    (Tag(0x0008, 0x0122), "MappingResourceName"),
    // The equipment's make, model and software (its serial number and station name are in the
    // table and go).
    (Tag(0x0008, 0x0070), "Manufacturer"),
    (Tag(0x0008, 0x1090), "ManufacturerModelName"),
    (Tag(0x0018, 0x1020), "SoftwareVersions"),
    (Tag(0x0018, 0x1016), "SecondaryCaptureDeviceManufacturer"),
    (Tag(0x0018, 0x1018), "SecondaryCaptureDeviceManufacturerModelName"),
    (Tag(0x0018, 0x1019), "SecondaryCaptureDeviceSoftwareVersions"),
    // Acquisition technique, as the series rules and models read it.
    (Tag(0x0018, 0x1210), "ConvolutionKernel"),
    (Tag(0x0018, 0x1160), "FilterType"),
    (Tag(0x0018, 0x1180), "CollimatorGridName"),
    (Tag(0x0018, 0x0024), "SequenceName"),
    (Tag(0x0018, 0x9005), "PulseSequenceName"),
    (Tag(0x0018, 0x1250), "ReceiveCoilName"),
    (Tag(0x0018, 0x1251), "TransmitCoilName"),
    (Tag(0x0018, 0x1040), "ContrastBolusRoute"),
    (Tag(0x0018, 0x1401), "AcquisitionDeviceProcessingCode"),
    // How pixel values are to be shown and measured.
    (Tag(0x0028, 0x1054), "RescaleType"),
    (Tag(0x0028, 0x1055), "WindowCenterWidthExplanation"),
    (Tag(0x0028, 0x3003), "LUTExplanation"),
    (Tag(0x0028, 0x0A04), "PixelSpacingCalibrationDescription"),
    (Tag(0x0040, 0x9210), "LUTLabel"),
    (Tag(0x0020, 0x1040), "PositionReferenceIndicator"),
    (Tag(0x0020, 0x9421), "DimensionDescriptionLabel"),
];

/// The VRs of free text: what this list reviews.
pub fn is_free_text(vr: dicom_core::VR) -> bool {
    use dicom_core::VR;
    matches!(vr, VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::UR)
}

/// Whether an unlisted free-text attribute is kept as sent.
pub fn is_safe(tag: Tag) -> bool {
    SAFE_TEXT.iter().any(|(t, _)| *t == tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};

    /// Every entry is a free-text attribute of the dictionary under the keyword given, none is
    /// listed in Table E.1-1 (where the table's action rules), and the conformance statement's
    /// table lists exactly these.
    #[test]
    fn the_safe_list_is_free_text_unlisted_and_in_the_conformance_statement() {
        let dict = dicom_dictionary_std::StandardDataDictionary;
        let table = super::super::table::Table::standard();
        for (tag, keyword) in SAFE_TEXT {
            let entry = dict.by_tag(tag).unwrap_or_else(|| panic!("{tag} not in the dictionary"));
            assert_eq!(entry.alias(), keyword, "{tag}");
            assert!(is_free_text(entry.vr().relaxed()), "{keyword} is not free text");
            assert!(table.lookup(tag.group(), tag.element()).is_none(), "{keyword} is listed in Table E.1-1");
        }
        const STATEMENT: &str = include_str!("../../conformance/conformance-statement.md");
        let start = STATEMENT.find("<!-- table:safe-text -->").expect("the statement has the safe-text table");
        let rows: Vec<(String, String)> = STATEMENT[start..]
            .lines()
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].to_string(), cells[2].trim_matches('`').to_string())
            })
            .collect();
        let code: Vec<(String, String)> = SAFE_TEXT.iter().map(|(t, k)| (format!("({:04X},{:04X})", t.group(), t.element()), k.to_string())).collect();
        assert_eq!(rows, code, "conformance statement table safe-text differs from deid::safe_text::SAFE_TEXT");
    }
}
