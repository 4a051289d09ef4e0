//! `triage-node model ...`: model packages; `model import` drafts one from a MONAI bundle
//! (`admin::model_import`) and prints what was inferred and what a person must fill in.

use std::path::PathBuf;

use clap::Subcommand;

use triage_node::admin::model_import;
use triage_node::config::Settings;

#[derive(Subcommand)]
pub enum ModelAction {
    /// Draft a model package from a MONAI bundle in its published layout (configs/metadata.json,
    /// models/model.ts): MODELS_DIR/NAME/model.pt (copied) and a model.toml DRAFT filled from the
    /// metadata, marked demonstration = true, with TODO comments where the metadata says nothing;
    /// prints what must be filled in. Never replaces an existing package unless --force.
    Import {
        bundle: PathBuf,
        /// The models folder (default: [inference] models_dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The package's name (default: the bundle's folder name).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing package of that name.
        #[arg(long)]
        force: bool,
    },
    /// Make a shadow model (mode = "shadow") live: its manifest loses mode and shadow_of, the
    /// live package it shadows moves to MODELS_DIR/.retired/ (kept), audited. Takes effect at
    /// the node's next start.
    Promote { name: String },
}

pub async fn run(action: ModelAction, settings: &Settings) -> anyhow::Result<()> {
    match action {
        ModelAction::Promote { name } => {
            let db = triage_node::admin::open(settings, triage_node::admin::Access::Audited).await?;
            let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
            let done = triage_node::admin::shadow::promote(&db, &settings.inference.models_dir, &name, &format!("cli:{user}")).await;
            db.close().await;
            let p = done?;
            println!(
                "{} {} is live, replacing {} {} (moved to {}); restart the node to load it",
                p.model,
                p.version,
                p.replaces,
                p.replaces_version,
                p.retired_to.display()
            );
            Ok(())
        }
        ModelAction::Import { bundle, out, name, force } => {
            let models_dir = out.unwrap_or_else(|| settings.inference.models_dir.clone());
            let imported = model_import::import(&bundle, &models_dir, name.as_deref(), force)?;
            print_import(&imported);
            Ok(())
        }
    }
}

fn print_import(i: &model_import::Imported) {
    let d = &i.draft;
    println!("imported the MONAI bundle {:?} as a DRAFT package {}", i.bundle, i.dir.display());
    println!("  model.pt    copied from models/model.ts");
    println!("  model.toml  manifest draft, demonstration = true until a person edits it");
    if !d.unsupported.is_empty() {
        println!();
        println!("NOT RUNNABLE HERE: this node runs 2D classifiers today; {} is issue-31 work.", d.unsupported.join(" and "));
        println!("The draft is written for when it can; the node will not run this model now.");
    }
    println!();
    println!("inferred from configs/metadata.json:");
    for f in &d.inferred {
        println!("  - {f}");
    }
    let (blocking, review): (Vec<_>, Vec<_>) = d.todos.iter().partition(|t| t.blocking);
    println!();
    println!("must be filled in before the package can be loaded:");
    if blocking.is_empty() {
        println!("  (none)");
    }
    for t in blocking {
        println!("  - {}: {}", t.field, t.what);
    }
    println!();
    println!("placeholders to fill in before clinical use (TODO comments in model.toml):");
    for t in review {
        println!("  - {}: {}", t.field, t.what);
    }
    println!();
    match &i.load_check {
        Ok(()) => println!(
            "load check (CPU, warm-up pass): the node loads this draft as written, as a demonstration model that flags nothing until thresholds are chosen"
        ),
        Err(e) => println!("load check (CPU, warm-up pass): the node REFUSES this package as written: {e}"),
    }
}
