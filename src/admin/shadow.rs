//! Shadow models (the trust loop): a package with `mode = "shadow"` runs on the studies it takes
//! and its results are stored (`shadow_results`), never sent, listed or notified. Here they are
//! compared with the live model they name, study by study: agreement on the flag (positive or
//! urgent, against negative), the correlation of the two models' highest probabilities, and the
//! studies the shadow would have made URGENT (or would have left below URGENT) had it been live.

use std::collections::BTreeMap;

use serde::Serialize;

use super::performance::{wilson, Estimate};
use super::AdminError;
use crate::db::{Db, Priority, ResultState};

/// A shadow model version against its live model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShadowComparison {
    pub model: String,
    pub model_version: String,
    pub shadow_of: String,
    /// Studies both have a result for.
    pub studies: u64,
    /// Of those, triaged by both (the others failed or were not analysed by one of them).
    pub both_triaged: u64,
    /// The shadow's result failed where the live one did not.
    pub shadow_failed: u64,
    /// Both flag the study (positive or urgent) or both do not, among those both triaged.
    pub agreement: Option<Estimate>,
    /// Pearson's r of the two highest probabilities per study (at least 3 studies, both varying).
    pub score_correlation: Option<f64>,
    /// The shadow says URGENT where the live model did not: studies that would have been read
    /// first, and the on-call told, had it been live.
    pub would_raise_to_urgent: u64,
    /// The live model said URGENT and the shadow does not.
    pub would_lower_from_urgent: u64,
}

fn flagged(p: Option<&str>) -> bool {
    matches!(p, Some("urgent" | "positive"))
}

/// Every shadow model version's comparison, by name.
pub async fn compare(db: &Db) -> Result<Vec<ShadowComparison>, AdminError> {
    let pairs = db.shadow_pairs().await?;
    // Per (shadow model, version, live model): the figures, the agreeing studies, the score pairs.
    type Tally = (ShadowComparison, u64, Vec<(f64, f64)>);
    let mut by: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    for p in &pairs {
        let s = &p.shadow;
        let key = (s.model.clone(), s.model_version.clone(), s.shadow_of.clone());
        let (c, agree, scores) = by.entry(key).or_insert_with(|| {
            let c = ShadowComparison {
                model: s.model.clone(),
                model_version: s.model_version.clone(),
                shadow_of: s.shadow_of.clone(),
                studies: 0,
                both_triaged: 0,
                shadow_failed: 0,
                agreement: None,
                score_correlation: None,
                would_raise_to_urgent: 0,
                would_lower_from_urgent: 0,
            };
            (c, 0, Vec::new())
        });
        c.studies += 1;
        let live_triaged = p.live_state == ResultState::Triaged.as_str();
        if s.state == ResultState::Failed && p.live_state != ResultState::Failed.as_str() {
            c.shadow_failed += 1;
        }
        if s.state != ResultState::Triaged || !live_triaged {
            continue;
        }
        c.both_triaged += 1;
        let (shadow_priority, live_priority) = (s.priority.map(Priority::as_str), p.live_priority.as_deref());
        if flagged(shadow_priority) == flagged(live_priority) {
            *agree += 1;
        }
        match (shadow_priority == Some("urgent"), live_priority == Some("urgent")) {
            (true, false) => c.would_raise_to_urgent += 1,
            (false, true) => c.would_lower_from_urgent += 1,
            _ => {}
        }
        let shadow_top = s.findings.iter().map(|f| f.probability).reduce(f64::max);
        if let (Some(a), Some(b)) = (shadow_top, p.live_top) {
            scores.push((a, b));
        }
    }
    Ok(by
        .into_values()
        .map(|(mut c, agree, scores)| {
            c.agreement = wilson(agree, c.both_triaged);
            c.score_correlation = pearson(&scores).map(|r| (r * 10_000.0).round() / 10_000.0);
            c
        })
        .collect())
}

/// What `promote` did.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub model: String,
    pub version: String,
    pub replaces: String,
    pub replaces_version: String,
    /// The retired package's folder now.
    pub retired_to: std::path::PathBuf,
}

/// Make the shadow model `name` live: its manifest loses `mode` and `shadow_of`, the live
/// package it names moves to `models_dir/.retired/<name>-<version>-<ms>/` (kept, never
/// deleted; a folder starting with a dot is never loaded), and the change is audited
/// (`model_promote`, who). Takes effect at the node's next start. Refused, changing nothing,
/// unless exactly one shadow package of that name and its live model's package are found.
pub async fn promote(db: &Db, models_dir: &std::path::Path, name: &str, user: &str) -> Result<Promotion, AdminError> {
    use crate::inference::package::{Manifest, Mode};
    fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AdminError {
        let path = path.display().to_string();
        move |source| AdminError::Io { what, path, source }
    }
    let packages: Vec<(std::path::PathBuf, Manifest)> = std::fs::read_dir(models_dir)
        .map_err(io("reading the models folder", models_dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .filter_map(|dir| Manifest::load(&dir.join("model.toml")).ok().map(|m| (dir, m)))
        .collect();
    let shadows: Vec<&(std::path::PathBuf, Manifest)> = packages.iter().filter(|(_, m)| m.name == name && m.mode == Mode::Shadow).collect();
    let [(shadow_dir, shadow)] = shadows.as_slice() else {
        return Err(AdminError::NotFound(format!("{} shadow packages named {name} in {} (exactly one is needed)", shadows.len(), models_dir.display())));
    };
    let live_name = shadow.shadow_of.clone().unwrap_or_default();
    let lives: Vec<&(std::path::PathBuf, Manifest)> = packages.iter().filter(|(_, m)| m.name == live_name && m.mode == Mode::Live).collect();
    let [(live_dir, live)] = lives.as_slice() else {
        return Err(AdminError::NotFound(format!("{} live packages named {live_name} (the one {name} shadows) in {}", lives.len(), models_dir.display())));
    };
    // The shadow's manifest without its two lines, checked to load as a live model before
    // anything moves.
    let manifest_path = shadow_dir.join("model.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(io("reading", &manifest_path))?;
    let promoted: String = text
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            key != "mode" && key != "shadow_of"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let staged = shadow_dir.join("model.toml.promoted");
    std::fs::write(&staged, &promoted).map_err(io("writing", &staged))?;
    match Manifest::load(&staged) {
        Ok(m) if m.mode == Mode::Live && m.shadow_of.is_none() => {}
        other => {
            let _ = std::fs::remove_file(&staged);
            let why = other.err().map(|e| e.to_string()).unwrap_or_else(|| "mode or shadow_of is not a line of its own".into());
            return Err(AdminError::Invalid(format!("{}: could not be made live: {why}", manifest_path.display())));
        }
    }
    let retired_dir = models_dir.join(".retired");
    std::fs::create_dir_all(&retired_dir).map_err(io("creating", &retired_dir))?;
    let retired_to = retired_dir.join(format!("{}-{}-{}", live.name, live.version, crate::domain::now_ms()));
    std::fs::rename(live_dir, &retired_to).map_err(io("moving the live package", live_dir))?;
    if let Err(source) = std::fs::rename(&staged, &manifest_path) {
        // Put the live package back: nothing changed.
        let _ = std::fs::rename(&retired_to, live_dir);
        return Err(AdminError::Io { what: "replacing", path: manifest_path.display().to_string(), source });
    }
    let relative = retired_to.strip_prefix(models_dir).unwrap_or(&retired_to).display().to_string();
    let details = crate::audit::Promoted {
        user: user.to_string(),
        version: shadow.version.clone(),
        replaces: live.name.clone(),
        replaces_version: live.version.clone(),
        retired_to: relative,
    };
    db.audit_append(&crate::audit::Event::ModelPromote { model: name.to_string(), details }).await?;
    Ok(Promotion { model: name.to_string(), version: shadow.version.clone(), replaces: live.name.clone(), replaces_version: live.version.clone(), retired_to })
}

/// Pearson's correlation coefficient; None below 3 pairs or when either side does not vary.
pub fn pearson(xy: &[(f64, f64)]) -> Option<f64> {
    if xy.len() < 3 {
        return None;
    }
    let n = xy.len() as f64;
    let (mx, my) = (xy.iter().map(|p| p.0).sum::<f64>() / n, xy.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_by_hand() {
        // x = 1, 2, 3; y = 2, 4, 7: r = 5 / sqrt(2 * 12.667) = 0.99340.
        let r = pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 7.0)]).unwrap();
        assert!((r - 0.993_399_267_798_783).abs() < 1e-9, "{r}");
        assert_eq!(pearson(&[(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]), None, "y does not vary");
        assert_eq!(pearson(&[(1.0, 1.0), (2.0, 2.0)]), None, "too few");
        assert!((pearson(&[(0.1, 0.9), (0.5, 0.5), (0.9, 0.1)]).unwrap() + 1.0).abs() < 1e-12);
    }
}
