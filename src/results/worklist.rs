//! The reading order: one entry per triaged study, urgent cases first. A study's priority is
//! the highest of its results' (URGENT > POSITIVE > FAILED > NOT_ANALYSED > NEGATIVE >
//! NOT_APPLICABLE): a study no model could analyse, or that the node chose not to look at
//! (pixels not kept), is read before the negatives, without AI, and says why.
//! Within URGENT and POSITIVE, the highest score comes first; ties, and every other priority,
//! go by arrival (oldest first: it has waited longest). Pure: the caller reads the results.

use serde::{Deserialize, Serialize};

use crate::db::{Priority, ResultState, StudyResult, WorklistRow};

/// A study's place on the worklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StudyPriority {
    Urgent,
    Positive,
    /// Could not be analysed: read it without AI (the entry carries the reason).
    Failed,
    /// A model takes its images but the node did not look at them (their pixels were not
    /// kept): read it without AI (the entry carries the reason). Never a negative.
    NotAnalysed,
    Negative,
    /// No model takes it.
    NotApplicable,
}

impl StudyPriority {
    pub fn of(result: &StudyResult) -> StudyPriority {
        match (result.state, result.priority) {
            (ResultState::Failed, _) => StudyPriority::Failed,
            (ResultState::NotApplicable, _) => StudyPriority::NotApplicable,
            (ResultState::NotAnalysed, _) => StudyPriority::NotAnalysed,
            (ResultState::Triaged, Some(Priority::Urgent)) => StudyPriority::Urgent,
            (ResultState::Triaged, Some(Priority::Positive)) => StudyPriority::Positive,
            (ResultState::Triaged, _) => StudyPriority::Negative,
        }
    }

    pub const ALL: [StudyPriority; 6] = [
        StudyPriority::Urgent,
        StudyPriority::Positive,
        StudyPriority::Failed,
        StudyPriority::NotAnalysed,
        StudyPriority::Negative,
        StudyPriority::NotApplicable,
    ];

    /// 0 (URGENT) to 4 (NOT_APPLICABLE): the worklist's sort key (stored with each row).
    /// NOT_ANALYSED shares FAILED's place: both are read without AI, by arrival.
    pub fn rank(self) -> i64 {
        match self {
            StudyPriority::Urgent => 0,
            StudyPriority::Positive => 1,
            StudyPriority::Failed | StudyPriority::NotAnalysed => 2,
            StudyPriority::Negative => 3,
            StudyPriority::NotApplicable => 4,
        }
    }

    pub fn parse(s: &str) -> Option<StudyPriority> {
        StudyPriority::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StudyPriority::Urgent => "URGENT",
            StudyPriority::Positive => "POSITIVE",
            StudyPriority::Failed => "FAILED",
            StudyPriority::NotAnalysed => "NOT_ANALYSED",
            StudyPriority::Negative => "NEGATIVE",
            StudyPriority::NotApplicable => "NOT_APPLICABLE",
        }
    }
}

/// One finding as the worklist shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedFinding {
    pub model: String,
    pub model_version: String,
    pub label: String,
    pub probability: f64,
    pub positive: bool,
    pub urgent: bool,
    pub tier: String,
    /// A detector's finding: how many boxes it kept (0, and left out of the JSON, for a
    /// classifier's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boxes: usize,
    /// The largest of them: its area in mm² where the image's Pixel Spacing is known, else in
    /// pixels of the source frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_box: Option<BoxSize>,
}

/// A box's area, in `mm2` or `px` (pixels, when the image has no Pixel Spacing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxSize {
    pub area: f64,
    pub unit: String,
}

impl BoxSize {
    /// The largest of a finding's boxes, by area (in mm² when every box has one).
    pub fn largest(boxes: &[crate::db::DetectedBox]) -> Option<BoxSize> {
        let mm = boxes.iter().all(|b| b.area_mm2.is_some());
        let area = |b: &crate::db::DetectedBox| if mm { b.area_mm2.unwrap_or(0.0) } else { b.area_pixels() };
        let biggest = boxes.iter().map(area).fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))))?;
        Some(BoxSize { area: (biggest * 100.0).round() / 100.0, unit: if mm { "mm2" } else { "px" }.into() })
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One study on the worklist (row ids only: the study's identity is in the sealed map).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorklistEntry {
    pub study_id: i64,
    pub priority: StudyPriority,
    /// The highest probability among the positive findings (the sort key within URGENT and
    /// POSITIVE); for an uncertain NEGATIVE, the highest probability of its uncertain findings
    /// (the sort key that lists it before the confident negatives).
    pub score: Option<f64>,
    /// A NEGATIVE study one of whose calls is in the lowest confidence tier (a score near the
    /// operating point): read before the confident negatives, and said so.
    pub uncertain: bool,
    pub findings: Vec<ListedFinding>,
    /// Any result came from a demonstration model (not clinically validated).
    pub demonstration: bool,
    /// Why a result failed, or why the study was not analysed (FAILED, NOT_ANALYSED).
    pub reasons: Vec<String>,
    /// When the study's last instance arrived.
    pub received_at_ms: i64,
    /// From that arrival to the result.
    pub time_to_result_ms: i64,
}

impl WorklistEntry {
    /// The stored row of this entry (`modalities`: the study's, as its instances say).
    pub fn to_row(&self, modalities: Vec<String>) -> WorklistRow {
        let mut models: Vec<String> = self.findings.iter().map(|f| f.model.clone()).collect();
        models.sort();
        models.dedup();
        let mut labels: Vec<String> = self.findings.iter().filter(|f| f.positive).map(|f| f.label.clone()).collect();
        labels.sort();
        labels.dedup();
        WorklistRow {
            study_id: self.study_id,
            study_instance_uid: String::new(),
            priority: self.priority.as_str().into(),
            priority_rank: self.priority.rank(),
            score: self.score,
            received_at_ms: self.received_at_ms,
            result_at_ms: self.received_at_ms + self.time_to_result_ms,
            modalities,
            models,
            positive_labels: labels,
            demonstration: self.demonstration,
            findings_json: serde_json::to_string(&self.findings).unwrap_or_else(|_| "[]".into()),
            reasons_json: serde_json::to_string(&self.reasons).unwrap_or_else(|_| "[]".into()),
            lowered_from: None,
            reading: crate::db::Reading::unread(),
            retraction: None,
            notified: Default::default(),
            scanner: None,
        }
    }

    /// The entry a stored row holds.
    pub fn from_row(row: &WorklistRow) -> WorklistEntry {
        let priority = StudyPriority::parse(&row.priority).unwrap_or(StudyPriority::Failed);
        let findings: Vec<ListedFinding> = serde_json::from_str(&row.findings_json).unwrap_or_default();
        WorklistEntry {
            study_id: row.study_id,
            priority,
            score: row.score,
            uncertain: uncertain(priority, &findings).is_some(),
            findings,
            demonstration: row.demonstration,
            reasons: serde_json::from_str(&row.reasons_json).unwrap_or_default(),
            received_at_ms: row.received_at_ms,
            time_to_result_ms: row.result_at_ms - row.received_at_ms,
        }
    }
}

/// The confidence tier of a call near the operating point (`triage::aggregate::Tiers`).
pub const LOWEST_TIER: &str = "needs_review";

/// For a NEGATIVE study, the highest probability among its calls in the lowest confidence tier
/// (None: every call is confident, or the study is not negative).
pub fn uncertain(priority: StudyPriority, findings: &[ListedFinding]) -> Option<f64> {
    if priority != StudyPriority::Negative {
        return None;
    }
    findings.iter().filter(|f| !f.positive && f.tier == LOWEST_TIER).map(|f| f.probability).fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
}

/// The worklist of `results` (every model's result of each study), in reading order.
pub fn entries(results: &[StudyResult]) -> Vec<WorklistEntry> {
    let mut by_study: std::collections::BTreeMap<i64, Vec<&StudyResult>> = std::collections::BTreeMap::new();
    for r in results {
        by_study.entry(r.study_id).or_default().push(r);
    }
    let mut out: Vec<WorklistEntry> = by_study
        .into_iter()
        .map(|(study_id, rs)| {
            let priority = rs.iter().map(|r| StudyPriority::of(r)).min().unwrap_or(StudyPriority::NotApplicable);
            let findings: Vec<ListedFinding> = rs
                .iter()
                .flat_map(|r| {
                    r.findings.iter().map(move |f| ListedFinding {
                        model: r.model.clone(),
                        model_version: r.model_version.clone(),
                        label: f.label.clone(),
                        probability: f.probability,
                        positive: f.positive,
                        urgent: f.urgent,
                        tier: f.tier.clone(),
                        boxes: f.boxes.len(),
                        largest_box: BoxSize::largest(&f.boxes),
                    })
                })
                .collect();
            let near_miss = uncertain(priority, &findings);
            let score =
                findings.iter().filter(|f| f.positive).map(|f| f.probability).fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p)))).or(near_miss);
            let received_at_ms = rs.iter().map(|r| r.last_received_at_ms).max().unwrap_or(0);
            let result_at_ms = rs.iter().map(|r| r.triaged_at_ms).max().unwrap_or(received_at_ms);
            WorklistEntry {
                study_id,
                priority,
                score,
                uncertain: near_miss.is_some(),
                findings,
                demonstration: rs.iter().any(|r| r.demonstration),
                reasons: rs.iter().filter(|r| matches!(r.state, ResultState::Failed | ResultState::NotAnalysed)).filter_map(|r| r.error.clone()).collect(),
                received_at_ms,
                time_to_result_ms: result_at_ms - received_at_ms,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.priority
            .rank()
            .cmp(&b.priority.rank())
            .then_with(|| match a.priority {
                // Higher score first; NaN never occurs (probabilities), treat it as equal.
                // An uncertain negative (a score) before the confident ones (none).
                StudyPriority::Urgent | StudyPriority::Positive | StudyPriority::Negative => b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal),
                _ => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.received_at_ms.cmp(&b.received_at_ms))
            .then_with(|| a.study_id.cmp(&b.study_id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Finding;

    fn result(study_id: i64, state: ResultState, priority: Option<Priority>, p: f64, received: i64) -> StudyResult {
        let finding = Finding {
            label: "nodule".into(),
            probability: p,
            positive: p >= 0.5,
            urgent: p >= 0.9,
            tier: "high".into(),
            key_instance_id: 1,
            key_frame: 0,
            source_rows: 1,
            source_cols: 1,
            cam_rows: 1,
            cam_cols: 1,
            cam: vec![0.0],
            span: Vec::new(),
            boxes: Vec::new(),
        };
        StudyResult {
            study_id,
            model: "m".into(),
            model_version: "1".into(),
            demonstration: true,
            intended_use: String::new(),
            limits: String::new(),
            state,
            priority,
            error: match state {
                ResultState::Failed => Some("pixels could not be decoded".into()),
                ResultState::NotAnalysed => Some("not analysed: pixels not kept".into()),
                _ => None,
            },
            images_inferred: 1,
            instances_failed: 0,
            preprocess_ms: 0.0,
            forward_ms: 0.0,
            last_received_at_ms: received,
            ready_at_ms: received + 3000,
            triaged_at_ms: received + 3100,
            series_instance_uid: None,
            findings: if state == ResultState::Triaged { vec![finding] } else { vec![] },
            inputs: None,
        }
    }

    /// URGENT, then POSITIVE by the highest score, then FAILED, NEGATIVE and NOT_APPLICABLE,
    /// each by arrival; a study's priority is the highest of its models'.
    #[test]
    fn urgent_cases_come_first_then_positives_by_score_then_by_arrival() {
        use Priority::*;
        use ResultState::*;
        let results = vec![
            result(1, Triaged, Some(Negative), 0.1, 100),
            result(2, Triaged, Some(Positive), 0.6, 200),
            result(3, Triaged, Some(Urgent), 0.95, 300),
            result(4, Triaged, Some(Positive), 0.8, 400),
            result(5, Failed, None, 0.0, 50),
            result(6, NotApplicable, None, 0.0, 10),
            result(7, Triaged, Some(Urgent), 0.99, 700),
            result(8, Triaged, Some(Negative), 0.2, 20),
            // Study 9: one model negative, another positive: positive wins.
            result(9, Triaged, Some(Negative), 0.1, 900),
            result(9, Triaged, Some(Positive), 0.7, 900),
            // Study 10: one model failed, another urgent: urgent wins, and the failure is said.
            result(10, Failed, None, 0.0, 1000),
            result(10, Triaged, Some(Urgent), 0.95, 1000),
            // Study 11: not analysed (pixels not kept): read without AI, with FAILED by arrival,
            // before every negative; never silent.
            result(11, NotAnalysed, None, 0.0, 40),
        ];
        let list = entries(&results);
        let order: Vec<(i64, &str)> = list.iter().map(|e| (e.study_id, e.priority.as_str())).collect();
        assert_eq!(
            order,
            [
                (7, "URGENT"),
                (3, "URGENT"),
                (10, "URGENT"),
                (4, "POSITIVE"),
                (9, "POSITIVE"),
                (2, "POSITIVE"),
                (11, "NOT_ANALYSED"),
                (5, "FAILED"),
                (8, "NEGATIVE"),
                (1, "NEGATIVE"),
                (6, "NOT_APPLICABLE"),
            ]
        );
        let urgent_with_failure = list.iter().find(|e| e.study_id == 10).unwrap();
        assert_eq!(urgent_with_failure.reasons, ["pixels could not be decoded"]);
        assert_eq!(urgent_with_failure.score, Some(0.95));
        assert_eq!(list.iter().find(|e| e.study_id == 9).unwrap().findings.len(), 2);
        assert_eq!(list.iter().find(|e| e.study_id == 11).unwrap().reasons, ["not analysed: pixels not kept"]);
        assert_eq!(list[0].time_to_result_ms, 3100);
        assert!(entries(&[]).is_empty());
    }

    /// What the worklist table stores reads back as the same entry, and sorts as `entries` did.
    #[test]
    fn an_entry_survives_its_row() {
        let list = entries(&[result(3, ResultState::Triaged, Some(Priority::Urgent), 0.95, 300), result(3, ResultState::Failed, None, 0.0, 300)]);
        let row = list[0].to_row(vec!["CR".into()]);
        assert_eq!(
            (row.priority.as_str(), row.priority_rank, row.positive_labels.clone(), row.models.clone()),
            ("URGENT", 0, vec!["nodule".to_string()], vec!["m".to_string()])
        );
        assert_eq!(WorklistEntry::from_row(&row), list[0]);
        for p in StudyPriority::ALL {
            assert_eq!(StudyPriority::parse(p.as_str()), Some(p));
        }
        assert_eq!(StudyPriority::parse("urgent"), Some(StudyPriority::Urgent));
        assert_eq!(StudyPriority::parse("STAT"), None);
    }

    /// A negative near the operating point (its call in the lowest tier) is read before the
    /// confident negatives, the nearest first; it says so and keeps that through its row.
    #[test]
    fn an_uncertain_negative_comes_before_the_confident_ones() {
        use ResultState::*;
        let near = |study, p, received| {
            let mut r = result(study, Triaged, Some(Priority::Negative), p, received);
            r.findings[0].positive = false;
            r.findings[0].urgent = false;
            r.findings[0].tier = LOWEST_TIER.into();
            r
        };
        let results = vec![
            result(1, Triaged, Some(Priority::Negative), 0.1, 100),
            near(2, 0.30, 200),
            near(3, 0.47, 300),
            result(4, Triaged, Some(Priority::Negative), 0.2, 50),
            result(5, Failed, None, 0.0, 400),
        ];
        let list = entries(&results);
        let order: Vec<(i64, bool)> = list.iter().map(|e| (e.study_id, e.uncertain)).collect();
        assert_eq!(order, [(5, false), (3, true), (2, true), (4, false), (1, false)], "failed, then the uncertain negatives by score, then by arrival");
        assert_eq!(list[1].score, Some(0.47), "the uncertain call's score is its sort key");
        assert_eq!(list[3].score, None, "a confident negative has none");
        let row = list[1].to_row(vec!["CR".into()]);
        assert_eq!(WorklistEntry::from_row(&row), list[1]);
        // A positive study is never "uncertain", whatever the tier of its other calls.
        let mut mixed = near(6, 0.4, 10);
        mixed.priority = Some(Priority::Positive);
        mixed.findings.push(crate::db::Finding { positive: true, tier: "high".into(), ..mixed.findings[0].clone() });
        assert!(!entries(&[mixed])[0].uncertain);
    }
}
