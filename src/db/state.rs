//! Every state and kind the database stores, as enums, mapped to their TEXT values here and
//! nowhere else. SQL that names a state in a WHERE clause uses the same spelling (the tests
//! below read each value back through the table it lives in).

use std::fmt;

/// An enum stored as TEXT: `as_str` is its column value, `parse` reads one back.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = super::DbError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(super::DbError::Invalid(format!("unknown {} {other:?} in the database", stringify!($name)))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        /// Compare with the stored spelling (`state == "failed"`).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

text_enum!(
    /// An instance's inference pass (`instances.inference_state`).
    InferenceState {
        Pending = "pending",
        Running = "running",
        /// Every model that accepts it ran.
        Done = "done",
        /// No model accepts it.
        NotRouted = "not_routed",
        Failed = "failed",
    }
);

text_enum!(
    /// A study's result for one model (`study_results.state`).
    ResultState {
        Triaged = "triaged",
        /// Could not be analysed (the reason is kept with it).
        Failed = "failed",
        /// The model takes none of the study's images.
        NotApplicable = "not_applicable",
        /// The model takes images of the study that the node chose not to look at (their
        /// pixels were not kept: burned-in annotation); the reason is kept with it.
        NotAnalysed = "not_analysed",
    }
);

text_enum!(
    /// The priority of a triaged result (`study_results.priority`).
    Priority {
        Urgent = "urgent",
        Positive = "positive",
        Negative = "negative",
    }
);

text_enum!(
    /// What an outbox item carries (`outbox.kind`).
    ObjectKind {
        /// A file an operator queued (`outbox add`).
        File = "file",
        /// A TID 1500 Structured Report.
        Sr = "sr",
        /// A Secondary Capture heatmap (the fallback picture).
        Sc = "sc",
        /// A Parametric Map heatmap (the model's activation as values, IHE AIR).
        Pm = "pm",
        /// A DICOM Segmentation of a segmenter's positive labels (a segment each).
        Seg = "seg",
        /// An IHE IOCM rejection note (Key Object Selection) withdrawing earlier result objects.
        Kos = "kos",
        /// An HL7 ORU^R01 for the RIS (`hl7::Report`, rendered at sending).
        Hl7 = "hl7",
        /// A notification of a study's triage to a webhook (`results::notify::Notice`, JSON sent
        /// as written: de-identified).
        Notice = "notice",
        /// A Unified Procedure Step for the site's worklist (`results::ups`), created by N-CREATE
        /// (UPS Push) at destination `ups:<AE>`; de-identified, re-identified at sending.
        Ups = "ups",
    }
);

text_enum!(
    /// An outbox item's delivery (`outbox.state`).
    OutboxState {
        /// Due at `next_attempt_at_ms`.
        Pending = "pending",
        /// Claimed until `lease_until_ms`.
        Sending = "sending",
        Delivered = "delivered",
        Dead = "dead",
    }
);

text_enum!(
    /// Where a worklist study is in its reading (`worklist.reading_state`).
    ReadingState {
        Unread = "unread",
        /// A reader has it open (`worklist.reader`); others get 409 until released.
        Claimed = "claimed",
        Read = "read",
    }
);

text_enum!(
    /// A study (`studies.state`).
    StudyState {
        Receiving = "receiving",
        Ready = "ready",
    }
);

text_enum!(
    /// A Modality Performed Procedure Step (`procedure_steps.state`): Performed Procedure Step
    /// Status (0040,0252), PS3.3 C.4.14.
    ProcedureStepState {
        InProgress = "IN PROGRESS",
        Completed = "COMPLETED",
        Discontinued = "DISCONTINUED",
    }
);

text_enum!(
    /// A background job (`jobs.state`).
    JobState {
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
    }
);

/// `sql` with each `{value}` placeholder naming one of `all` replaced by that value's quoted
/// spelling (`state = {pending}` becomes `state = 'pending'`): SQL that names a state takes
/// its spelling from the enum. A misspelt placeholder stays, and the statement fails to parse.
pub(crate) fn spelled<T: Copy>(sql: &str, all: &[T], text: impl Fn(T) -> &'static str) -> String {
    all.iter().fold(sql.to_string(), |s, &v| s.replace(&format!("{{{}}}", text(v)), &format!("'{}'", text(v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value reads back as itself.
    #[test]
    fn every_state_round_trips_through_its_text() {
        fn check<T: Copy + PartialEq + fmt::Debug + std::str::FromStr>(all: &[T], text: impl Fn(T) -> &'static str) {
            for &v in all {
                assert_eq!(text(v).parse::<T>().ok(), Some(v));
            }
        }
        check(InferenceState::ALL, InferenceState::as_str);
        check(ResultState::ALL, ResultState::as_str);
        check(Priority::ALL, Priority::as_str);
        check(ObjectKind::ALL, ObjectKind::as_str);
        check(OutboxState::ALL, OutboxState::as_str);
        check(StudyState::ALL, StudyState::as_str);
        check(JobState::ALL, JobState::as_str);
        check(ProcedureStepState::ALL, ProcedureStepState::as_str);
        check(ReadingState::ALL, ReadingState::as_str);
        assert!("sent".parse::<OutboxState>().is_err());
        assert_eq!(ResultState::Failed, "failed");
    }
}
