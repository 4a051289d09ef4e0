//! The query keys the index holds, per level (PS3.4 C.6.1.1 and C.6.2.1): data, kept equal to
//! the conformance statement's table by a unit test. The IMAGE keys are those a PACS needs to
//! list a study's AI results without retrieving them (IHE AIR): what each object is (SOP
//! Class, document title, template, label), when it was made (Content Date/Time) and by which
//! algorithm (Contributing Equipment).

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use crate::dicom::matching::Kind;
use crate::dicom::sop::qr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    pub fn parse(value: &str) -> Option<Level> {
        match value.trim_matches(|c| c == ' ' || c == '\0') {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }

    /// The level's unique key.
    pub fn unique_key(self) -> Tag {
        match self {
            Level::Patient => tags::PATIENT_ID,
            Level::Study => tags::STUDY_INSTANCE_UID,
            Level::Series => tags::SERIES_INSTANCE_UID,
            Level::Image => tags::SOP_INSTANCE_UID,
        }
    }
}

/// The Query/Retrieve Information Model a SOP class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    PatientRoot,
    StudyRoot,
}

impl Model {
    pub fn of(sop_class: &str) -> Option<Model> {
        match sop_class {
            qr::PATIENT_ROOT_FIND | qr::PATIENT_ROOT_MOVE | qr::PATIENT_ROOT_GET => Some(Model::PatientRoot),
            qr::STUDY_ROOT_FIND | qr::STUDY_ROOT_MOVE | qr::STUDY_ROOT_GET => Some(Model::StudyRoot),
            _ => None,
        }
    }

    pub fn top(self) -> Level {
        match self {
            Model::PatientRoot => Level::Patient,
            Model::StudyRoot => Level::Study,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Model::PatientRoot => "patient root",
            Model::StudyRoot => "study root",
        }
    }
}

/// One key the index supports for matching and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub tag: Tag,
    pub vr: VR,
    pub level: Level,
    pub name: &'static str,
    /// Counted or collected from the levels below, not stored.
    pub computed: bool,
}

const fn k(level: Level, tag: Tag, vr: VR, name: &'static str) -> Key {
    Key { tag, vr, level, name, computed: false }
}

const fn c(level: Level, tag: Tag, vr: VR, name: &'static str) -> Key {
    Key { tag, vr, level, name, computed: true }
}

use Level::{Image, Patient, Series, Study};

pub const KEYS: &[Key] = &[
    k(Patient, tags::PATIENT_NAME, VR::PN, "PatientName"),
    k(Patient, tags::PATIENT_ID, VR::LO, "PatientID"),
    k(Patient, tags::ISSUER_OF_PATIENT_ID, VR::LO, "IssuerOfPatientID"),
    k(Patient, tags::PATIENT_BIRTH_DATE, VR::DA, "PatientBirthDate"),
    k(Patient, tags::PATIENT_SEX, VR::CS, "PatientSex"),
    c(Patient, tags::NUMBER_OF_PATIENT_RELATED_STUDIES, VR::IS, "NumberOfPatientRelatedStudies"),
    c(Patient, tags::NUMBER_OF_PATIENT_RELATED_SERIES, VR::IS, "NumberOfPatientRelatedSeries"),
    c(Patient, tags::NUMBER_OF_PATIENT_RELATED_INSTANCES, VR::IS, "NumberOfPatientRelatedInstances"),
    k(Study, tags::STUDY_INSTANCE_UID, VR::UI, "StudyInstanceUID"),
    k(Study, tags::STUDY_DATE, VR::DA, "StudyDate"),
    k(Study, tags::STUDY_TIME, VR::TM, "StudyTime"),
    k(Study, tags::ACCESSION_NUMBER, VR::SH, "AccessionNumber"),
    k(Study, tags::STUDY_ID, VR::SH, "StudyID"),
    k(Study, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "ReferringPhysicianName"),
    k(Study, tags::STUDY_DESCRIPTION, VR::LO, "StudyDescription"),
    c(Study, tags::MODALITIES_IN_STUDY, VR::CS, "ModalitiesInStudy"),
    c(Study, tags::SOP_CLASSES_IN_STUDY, VR::UI, "SOPClassesInStudy"),
    c(Study, tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, "NumberOfStudyRelatedSeries"),
    c(Study, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "NumberOfStudyRelatedInstances"),
    k(Series, tags::SERIES_INSTANCE_UID, VR::UI, "SeriesInstanceUID"),
    k(Series, tags::MODALITY, VR::CS, "Modality"),
    k(Series, tags::SERIES_NUMBER, VR::IS, "SeriesNumber"),
    k(Series, tags::SERIES_DESCRIPTION, VR::LO, "SeriesDescription"),
    k(Series, tags::SERIES_DATE, VR::DA, "SeriesDate"),
    k(Series, tags::SERIES_TIME, VR::TM, "SeriesTime"),
    c(Series, tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, "NumberOfSeriesRelatedInstances"),
    k(Image, tags::SOP_INSTANCE_UID, VR::UI, "SOPInstanceUID"),
    k(Image, tags::SOP_CLASS_UID, VR::UI, "SOPClassUID"),
    k(Image, tags::INSTANCE_NUMBER, VR::IS, "InstanceNumber"),
    k(Image, tags::CONTENT_DATE, VR::DA, "ContentDate"),
    k(Image, tags::CONTENT_TIME, VR::TM, "ContentTime"),
    k(Image, tags::COMPLETION_FLAG, VR::CS, "CompletionFlag"),
    k(Image, tags::VERIFICATION_FLAG, VR::CS, "VerificationFlag"),
    k(Image, tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, "ConceptNameCodeSequence"),
    k(Image, tags::CONTENT_TEMPLATE_SEQUENCE, VR::SQ, "ContentTemplateSequence"),
    k(Image, tags::SOURCE_IMAGE_SEQUENCE, VR::SQ, "SourceImageSequence"),
    // Content Identification Macro (PS3.3 Table 10-12): the Parametric Map's label.
    k(Image, tags::CONTENT_LABEL, VR::CS, "ContentLabel"),
    k(Image, tags::CONTENT_DESCRIPTION, VR::LO, "ContentDescription"),
    k(Image, tags::CONTENT_CREATOR_NAME, VR::PN, "ContentCreatorName"),
    // IHE AIR: each algorithm that made the result is an item (Manufacturer, Manufacturer's
    // Model Name, Software Versions, Device UID, Purpose of Reference).
    k(Image, tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, VR::SQ, "ContributingEquipmentSequence"),
];

pub fn key(tag: Tag) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.tag == tag)
}

/// How values of `vr` are matched.
pub fn kind(vr: VR) -> Kind {
    match vr {
        VR::PN => Kind::PersonName,
        VR::UI => Kind::Uid,
        VR::DA => Kind::Date,
        VR::TM => Kind::Time,
        VR::DT => Kind::DateTime,
        VR::IS | VR::DS | VR::US | VR::UL | VR::SS | VR::SL | VR::FL | VR::FD => Kind::Number,
        _ => Kind::Text,
    }
}
