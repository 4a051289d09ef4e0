//! The database layer on both engines: the same suite on SQLite and on PostgreSQL, plus a node
//! storing into PostgreSQL. Under CI=true a missing PostgreSQL fails instead of skipping.

use crate::common::*;
use triage_node::db::{
    AckOutcome, AckTarget, AeRole, Db, InsertOutcome, NewInstance, NewNotification, NewOutboxItem, ObjectKind, Reading, ReadingAction, ReadingOutcome,
    RegisteredAe, RetractOutcome, RetractRecord, StudyResult, StudySave, WorklistCursor, WorklistFilter, WorklistRow, WorklistSort,
};
use triage_node::domain::AeTitle;

fn instance(uid: &str, study: &str) -> NewInstance {
    NewInstance {
        sop_instance_uid: uid.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        study_instance_uid: study.into(),
        series_instance_uid: format!("{study}.1"),
        modality: Some("CT".into()),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        calling_ae_title: "CT1".into(),
        path: format!("store/x/{uid}.dcm"),
        size_bytes: 10,
        dataset_digest: "00".into(),
        received_at_ms: 1_000,
        excluded_reason: None,
        deid_method: None,
        patient_pseudonym: Some("ANON".into()),
    }
}

async fn suite(url: &str) {
    let key = [0x5Au8; 32];
    let db = Db::open(url, 8).await.unwrap().with_audit_key(zeroize::Zeroizing::new(key));
    db.migrate().await.unwrap(); // idempotent

    // AE registry
    let ae = RegisteredAe {
        ae_title: AeTitle::parse("PACS1").unwrap(),
        host: Some("10.1.1.1".into()),
        port: Some(104),
        role: AeRole::Pacs,
        enabled: true,
        tls: false,
        tls_identity: None,
    };
    db.upsert_ae(&ae).await.unwrap();
    assert_eq!(db.find_ae("PACS1").await.unwrap(), Some(ae.clone()));
    db.upsert_ae(&RegisteredAe { enabled: false, ..ae.clone() }).await.unwrap();
    assert!(!db.find_ae("PACS1").await.unwrap().unwrap().enabled);
    assert_eq!(db.list_aes().await.unwrap().len(), 1);
    assert!(db.remove_ae(&ae.ae_title).await.unwrap());
    assert!(!db.remove_ae(&ae.ae_title).await.unwrap());
    assert_eq!(db.find_ae("PACS1").await.unwrap(), None);

    // Instances, duplicates, and concurrent duplicates: exactly one insert wins.
    assert!(matches!(db.insert_instance(&instance("1.1", "9.9"), None).await.unwrap(), InsertOutcome::Inserted { .. }));
    assert!(matches!(db.insert_instance(&instance("1.1", "9.9"), None).await.unwrap(), InsertOutcome::Duplicate { .. }));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move { db.insert_instance(&instance("1.2", "9.9"), None).await.unwrap() }));
    }
    let mut inserted = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), InsertOutcome::Inserted { .. }) {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(db.count_instances().await.unwrap(), 2);
    assert_eq!(db.find_instance("1.2").await.unwrap().unwrap().transfer_syntax_uid, "1.2.840.10008.1.2.1");

    // Study readiness: instances are attached first; not before the cutoff, exactly once, again
    // after a new instance.
    assert!(db.promote_quiet_studies(5_000).await.unwrap().is_empty(), "nothing attached yet");
    assert_eq!(db.attach_new_instances().await.unwrap(), 2);
    assert_eq!(db.attach_new_instances().await.unwrap(), 0);
    assert!(db.promote_quiet_studies(999).await.unwrap().is_empty());
    let ready = db.promote_quiet_studies(5_000).await.unwrap();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].instance_count, 2);
    assert!(db.promote_quiet_studies(5_000).await.unwrap().is_empty());
    db.insert_instance(&NewInstance { received_at_ms: 6_000, ..instance("1.3", "9.9") }, None).await.unwrap();
    assert!(db.promote_quiet_studies(7_000).await.unwrap().is_empty(), "an unattached instance holds the study");
    assert_eq!(db.attach_new_instances().await.unwrap(), 1);
    let again = db.promote_quiet_studies(7_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].instance_count, 3);
    let jobs = db.list_jobs().await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.kind == "study_ready" && j.state == "pending"));

    // Audit chain: sequential and concurrent appends form one valid chain.
    db.audit_append(&triage_node::audit::Event::AeRemove { ae: "CT1".into() }).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move { db.audit_append(&triage_node::audit::Event::AeRemove { ae: format!("CT{i}") }).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (entries, head_seq, head_hash) = db.audit_chain().await.unwrap();
    assert_eq!(triage_node::audit::verify(&key, &entries, head_seq, &head_hash), Ok(9));

    // De-identification audit: every stored instance gets exactly one entry, even with sweeps
    // running concurrently (as on several nodes), and the chain stays valid.
    let mut sweeps = Vec::new();
    for _ in 0..3 {
        let db = db.clone();
        sweeps.push(tokio::spawn(async move { db.audit_new_instances(2).await.unwrap() }));
    }
    let mut audited = 0;
    for s in sweeps {
        audited += s.await.unwrap();
    }
    while let n @ 1.. = db.audit_new_instances(2).await.unwrap() {
        audited += n;
    }
    assert_eq!(audited as i64, db.count_instances().await.unwrap());
    let (entries, head_seq, head_hash) = db.audit_chain().await.unwrap();
    assert_eq!(triage_node::audit::verify(&key, &entries, head_seq, &head_hash), Ok(9 + audited));
    assert_eq!(entries.iter().filter(|e| e.event == "deidentify").count(), audited);

    // Outbox: one row per (object, destination); a node claims only its own rows, and
    // concurrent claimers never get the same row.
    assert!(db.outbox_enqueue("n1", "outbox/a.dcm", "PACS").await.unwrap().is_some());
    assert!(db.outbox_enqueue("n1", "outbox/a.dcm", "PACS").await.unwrap().is_none());
    db.outbox_enqueue("n1", "outbox/b.dcm", "PACS").await.unwrap();
    db.outbox_enqueue("n1", "outbox/c.dcm", "PACS").await.unwrap();
    db.outbox_enqueue("n2", "outbox/d.dcm", "PACS").await.unwrap();
    let mut claims = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        claims.push(tokio::spawn(async move { db.outbox_claim(Some("n1"), 60_000, 1).await.unwrap() }));
    }
    let mut ids = Vec::new();
    for c in claims {
        ids.extend(c.await.unwrap().into_iter().map(|i| i.id));
    }
    ids.sort();
    assert_eq!(ids.len(), 3, "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "a row was claimed twice");
    assert!(db.outbox_claim(Some("n1"), 60_000, 10).await.unwrap().is_empty(), "leased rows are not claimable");
    db.outbox_delivered(ids[0], None).await.unwrap();
    db.outbox_dead(ids[1], "status 0xC000", None).await.unwrap();
    assert_eq!(db.outbox_release_claims("n1").await.unwrap(), 1);
    assert_eq!(db.outbox_requeue(None).await.unwrap(), 1);
    let states: Vec<String> = db.outbox_list(None).await.unwrap().into_iter().map(|i| i.state.to_string()).collect();
    assert_eq!(states, ["delivered", "pending", "pending", "pending"]);

    // A study result and its result objects are saved in one transaction with the job's end,
    // by the job's latest claimer only: a claimer whose lease ran out while another node took
    // the job over saves nothing and queues nothing (no second report).
    let stale = db.claim_study_job(1_000, 2_000).await.unwrap().expect("the pending job is claimed");
    assert_eq!(stale.id, jobs[0].id);
    let other = db.claim_study_job(1_500, 3_000).await.unwrap().expect("the second pending job");
    assert_ne!(other.id, stale.id, "a live claim is not taken over");
    let job = &db.claim_study_job(2_500, i64::MAX / 2).await.unwrap().expect("an expired claim is taken over");
    assert_eq!((job.id, job.attempt), (stale.id, stale.attempt + 1));
    assert!(!db.renew_study_job(&stale, 9_000).await.unwrap(), "the stale claimer cannot renew");
    let result = StudyResult {
        study_id: job.study_id,
        model: "m".into(),
        model_version: "1".into(),
        demonstration: true,
        intended_use: "test".into(),
        limits: "test".into(),
        state: "triaged".parse().unwrap(),
        priority: Some("negative".parse().unwrap()),
        error: None,
        images_inferred: 1,
        instances_failed: 0,
        preprocess_ms: 1.0,
        forward_ms: 1.0,
        last_received_at_ms: 6_000,
        ready_at_ms: 7_000,
        triaged_at_ms: 7_100,
        series_instance_uid: None,
        findings: vec![],
        inputs: Some(triage_node::db::InputStats {
            histogram: vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            pixel_spacing: Some(0.7),
            slice_thickness: None,
        }),
    };
    let item = |path: &str, kind: &str| NewOutboxItem {
        path: path.into(),
        destination: "PACS".into(),
        kind: kind.parse().unwrap(),
        study_id: Some(job.study_id),
        reidentify: true,
    };
    let results = std::slice::from_ref(&result);
    let stale_item = [item("outbox/results/stale.dcm", "sr")];
    let stale_save = db.save_study_results(&stale, "n3", StudySave { results, outbox: &stale_item, ..Default::default() }).await;
    assert!(matches!(stale_save, Err(triage_node::db::DbError::ClaimLost(_))), "{stale_save:?}");
    assert!(db.outbox_paths_under("outbox/results/").await.unwrap().is_empty(), "the stale claimer queued nothing");
    assert!(db.renew_study_job(job, i64::MAX / 2).await.unwrap());
    // A shadow model's result of the study is saved with the live one, and found beside it.
    let shadow = triage_node::db::ShadowResult {
        study_id: job.study_id,
        model: "next-gen".into(),
        model_version: "2".into(),
        shadow_of: result.model.clone(),
        state: "triaged".parse().unwrap(),
        priority: Some("urgent".parse().unwrap()),
        findings: vec![triage_node::db::ShadowFinding { label: "nodule".into(), probability: 0.97, positive: true, urgent: true }],
        triaged_at_ms: 7_000,
    };
    let items = [item("outbox/results/x.dcm", "sc"), item("outbox/results/y.dcm", "sr")];
    db.save_study_results(job, "n3", StudySave { results, outbox: &items, shadows: std::slice::from_ref(&shadow), ..Default::default() }).await.unwrap();
    // The result's input statistics are saved with it and read back for the input drift check.
    let inputs = db.recent_inputs("m", "1", 10).await.unwrap();
    assert_eq!(inputs, [(result.inputs.clone().unwrap(), None)]);
    assert_eq!(db.recent_results(10).await.unwrap().iter().find(|r| r.model == "m").map(|r| r.inputs.clone()), Some(result.inputs.clone()));
    let pairs = db.shadow_pairs().await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!((&pairs[0].shadow, pairs[0].live_state.as_str()), (&shadow, result.state.as_str()));
    let queued = db.outbox_claim(Some("n3"), 60_000, 10).await.unwrap();
    assert_eq!(
        queued.iter().map(|i| (i.kind.as_str(), i.study_id, i.reidentify)).collect::<Vec<_>>(),
        [("sc", Some(job.study_id), true), ("sr", Some(job.study_id), true)]
    );
    assert_eq!(db.outbox_paths_under("outbox/results/").await.unwrap().len(), 2);
    let (last, ready) = db.study_last_received(job.study_id).await.unwrap().unwrap();
    assert!(last == 6_000 && ready.is_some(), "{last} {ready:?}");
    assert!(db.list_jobs().await.unwrap().iter().any(|j| j.id == job.id && j.state == "done"));

    // The notifications ledger: recorded with the results, delivered once, escalated once (the
    // next notice queued in the same transaction), acknowledged for the whole chain with its
    // audit entry, by the link's token or by the study; withdrawn by a retraction.
    let notice = |id: &str, chain: &str, level: i64, rule: &str, escalate_at_ms: Option<i64>, sha: &str| NewNotification {
        id: id.into(),
        study_id: other.study_id,
        chain: chain.into(),
        level,
        rule: rule.into(),
        priority: "URGENT".into(),
        created_at_ms: 10_000,
        last_instance_at_ms: Some(6_000),
        escalate_at_ms,
        ack_token_sha256: Some(sha.into()),
    };
    let hook = |path: &str, to: &str| NewOutboxItem {
        path: path.into(),
        destination: to.into(),
        kind: ObjectKind::Notice,
        study_id: Some(other.study_id),
        reidentify: false,
    };
    let first = notice("tn-a", "tn-a", 0, "oncall", Some(20_000), "sha-a");
    let other_result = StudyResult { study_id: other.study_id, ..result.clone() };
    let hooks = [hook("outbox/notify/tn-a.1.json", "webhook:oncall")];
    let other_results = [other_result];
    db.save_study_results(
        &other,
        "n3",
        StudySave { results: &other_results, outbox: &hooks, notifications: std::slice::from_ref(&first), ..Default::default() },
    )
    .await
    .unwrap();
    assert!(db.notifications_due(19_999, 10).await.unwrap().is_empty(), "not due yet");
    let (delivered, first_for_study) = db.notification_delivered("tn-a", 10_500).await.unwrap().unwrap();
    assert_eq!((delivered.delivered_at_ms, delivered.last_instance_at_ms, first_for_study), (Some(10_500), Some(6_000), false), "no worklist row to mark");
    assert!(db.notification_delivered("tn-a", 10_600).await.unwrap().is_none(), "delivered once");
    let due = db.notifications_due(20_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["tn-a"]);
    let up = notice("tn-b", "tn-a", 1, "backup", None, "sha-b");
    let up_item = hook("outbox/notify/tn-b.1.json", "email:backup");
    assert!(db.notification_escalate("tn-a", 20_100, "n3", Some((&up, &up_item))).await.unwrap());
    assert!(!db.notification_escalate("tn-a", 20_200, "n3", Some((&up, &up_item))).await.unwrap(), "escalated once");
    assert!(db.notifications_due(99_999, 10).await.unwrap().is_empty());
    assert!(db.outbox_list(None).await.unwrap().iter().any(|i| i.destination == "email:backup"));
    assert_eq!(db.notification_chain_by_token("sha-b").await.unwrap().map(|n| n.id), Some("tn-a".into()), "a link names its chain");
    let acked = db.notification_acknowledge(AckTarget::Token("sha-b"), "link", "link", 30_000).await.unwrap();
    assert!(matches!(&acked, AckOutcome::Done(n) if n.id == "tn-a" && n.acknowledged_by.as_deref() == Some("link")), "{acked:?}");
    assert!(matches!(db.notification_acknowledge(AckTarget::Study(other.study_id), "dr.a", "api", 31_000).await.unwrap(), AckOutcome::Already(_)));
    assert!(matches!(db.notification_acknowledge(AckTarget::Token("nope"), "link", "link", 31_000).await.unwrap(), AckOutcome::Missing));
    let chain = db.study_notifications(other.study_id).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert!(chain.iter().all(|n| n.acknowledged_at_ms == Some(30_000)), "{chain:?}");
    let acks: Vec<_> = db.audit_chain().await.unwrap().0.into_iter().filter(|e| e.event == "acknowledge").collect();
    assert_eq!(acks.len(), 1);
    assert!(acks[0].details.contains("\"after_ms\":20000") && acks[0].details.contains("tn-a"), "{}", acks[0].details);

    // The worklist row: saved with the results, read in reading order with cursors; a lowered
    // priority is said; the reading state survives a re-analysis; claims conflict.
    let row = |priority: &str, rank: i64, score: Option<f64>| WorklistRow {
        study_id: job.study_id,
        study_instance_uid: String::new(),
        priority: priority.into(),
        priority_rank: rank,
        score,
        received_at_ms: 6_000,
        result_at_ms: 7_100,
        modalities: vec!["CT".into()],
        models: vec!["m".into()],
        positive_labels: if rank <= 1 { vec!["pleural_effusion".into()] } else { vec![] },
        demonstration: true,
        findings_json: "[]".into(),
        reasons_json: "[]".into(),
        lowered_from: None,
        reading: Reading::unread(),
        retraction: None,
        notified: Default::default(),
        scanner: None,
    };
    assert_eq!(db.worklist_save(&row("URGENT", 0, Some(0.97))).await.unwrap(), None);
    let f = WorklistFilter { finding: Some("pleural_effusion".into()), modality: Some("CT".into()), ..Default::default() };
    assert_eq!(db.worklist_page(&f, WorklistSort::Priority, None, 10).await.unwrap().len(), 1);
    let f = WorklistFilter { finding: Some("pleural%".into()), ..Default::default() };
    assert!(db.worklist_page(&f, WorklistSort::Priority, None, 10).await.unwrap().is_empty(), "LIKE characters match themselves");
    let f = WorklistFilter { modality: Some("C".into()), ..Default::default() };
    assert!(db.worklist_page(&f, WorklistSort::Priority, None, 10).await.unwrap().is_empty(), "whole values only");
    assert_eq!(
        db.worklist_reading(job.study_id, ReadingAction::Claim, "dr.a").await.unwrap(),
        ReadingOutcome::Done(db.worklist_row(job.study_id).await.unwrap().unwrap().reading)
    );
    assert!(matches!(db.worklist_reading(job.study_id, ReadingAction::Claim, "dr.b").await.unwrap(), ReadingOutcome::Conflict(_)));
    assert!(matches!(db.worklist_reading(999_999, ReadingAction::Claim, "dr.b").await.unwrap(), ReadingOutcome::Missing));
    // Re-analysed as negative: lowered from URGENT, said; the claim kept.
    assert_eq!(db.worklist_save(&row("NEGATIVE", 3, None)).await.unwrap(), Some("URGENT".into()));
    let saved = db.worklist_row(job.study_id).await.unwrap().unwrap();
    assert_eq!((saved.priority.as_str(), saved.lowered_from.as_deref(), saved.reading.reader.as_deref()), ("NEGATIVE", Some("URGENT"), Some("dr.a")));
    assert_eq!(db.worklist_save(&row("NEGATIVE", 3, None)).await.unwrap(), None, "not lowered again");
    assert_eq!(db.worklist_row(job.study_id).await.unwrap().unwrap().lowered_from.as_deref(), Some("URGENT"), "still said");
    assert_eq!(db.worklist_save(&row("POSITIVE", 1, Some(0.7))).await.unwrap(), None);
    assert_eq!(db.worklist_row(job.study_id).await.unwrap().unwrap().lowered_from, None, "raised: nothing to say");
    // A cursor after the only row gives an empty page, on both engines' row comparisons.
    let page = db.worklist_page(&WorklistFilter::default(), WorklistSort::Priority, None, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    for sort in [WorklistSort::Priority, WorklistSort::Newest, WorklistSort::Oldest] {
        assert!(db.worklist_page(&WorklistFilter::default(), sort, Some(WorklistCursor::after(&page[0])), 10).await.unwrap().is_empty(), "{sort:?}");
    }
    // Retracted by an admin (one transaction: the row, the note's outbox row, the audit entry):
    // off every listing and count, readable by id, no reading action; only for the result the
    // note was built from, and once; a new result brings the row back, lowering nothing.
    let details = triage_node::audit::Retracted {
        user: "it-admin".into(),
        reason: "wrong model".into(),
        code: "113037".into(),
        note: Some("2.25.9".into()),
        objects: vec!["2.25.8".into()],
        hl7: false,
    };
    let event = triage_node::audit::Event::Retract { study: job.study_id, details };
    let note = NewOutboxItem {
        path: "outbox/results/note.dcm".into(),
        destination: "PACS".into(),
        kind: ObjectKind::Kos,
        study_id: Some(job.study_id),
        reidentify: true,
    };
    let record = |result_at_ms| RetractRecord {
        study_id: job.study_id,
        result_at_ms,
        by: "it-admin",
        code: "113037",
        node: "n1",
        outbox: std::slice::from_ref(&note),
        event: &event,
    };
    assert_eq!(db.worklist_retract(&record(1)).await.unwrap(), RetractOutcome::Replaced, "built from another result");
    assert_eq!(db.worklist_retract(&RetractRecord { study_id: 999_999, ..record(7_100) }).await.unwrap(), RetractOutcome::Missing);
    assert!(db.outbox_study_paths(job.study_id, ObjectKind::Kos).await.unwrap().is_empty(), "nothing written");
    let RetractOutcome::Done(done) = db.worklist_retract(&record(7_100)).await.unwrap() else { panic!("retracted") };
    assert_eq!((done.by.as_str(), done.code.as_str()), ("it-admin", "113037"));
    assert!(matches!(db.worklist_retract(&record(7_100)).await.unwrap(), RetractOutcome::Retracted(r) if r == done), "once");
    for sort in [WorklistSort::Priority, WorklistSort::Newest, WorklistSort::Oldest] {
        assert!(db.worklist_page(&WorklistFilter::default(), sort, None, 10).await.unwrap().is_empty(), "{sort:?}");
    }
    assert!(db.worklist_counts().await.unwrap().is_empty());
    assert_eq!(db.worklist_row(job.study_id).await.unwrap().unwrap().retraction, Some(done));
    assert_eq!(db.worklist_reading(job.study_id, ReadingAction::Release, "dr.a").await.unwrap(), ReadingOutcome::Missing);
    assert_eq!(db.outbox_study_paths(job.study_id, ObjectKind::Kos).await.unwrap(), ["outbox/results/note.dcm"]);
    assert_eq!(db.worklist_save(&row("NEGATIVE", 3, None)).await.unwrap(), None, "a withdrawn priority is not lowered");
    let back = db.worklist_row(job.study_id).await.unwrap().unwrap();
    assert_eq!((back.retraction, back.lowered_from, back.priority.as_str()), (None, None, "NEGATIVE"));
    assert_eq!(db.worklist_page(&WorklistFilter::default(), WorklistSort::Priority, None, 10).await.unwrap().len(), 1);
    let audit = db.audit_chain().await.unwrap().0;
    assert!(audit.iter().any(|e| e.event == "reading" && e.subject == format!("study:{}", job.study_id) && e.details.contains("dr.a")));
    let retract = audit.iter().filter(|e| e.event == "retract").collect::<Vec<_>>();
    assert_eq!(retract.len(), 1);
    assert_eq!(retract[0].subject, format!("study:{}", job.study_id));
    assert!(retract[0].details.contains("wrong model") && retract[0].details.contains("113037"), "{}", retract[0].details);

    // A group commit (ingest's, several associations' rows in one transaction): each row gets
    // its own outcome; a copy already stored, or earlier in the same batch, is a duplicate of
    // the first, and only the first's sealed record is kept.
    let (a, b, stored) = (instance("7.1", "7.0"), instance("7.2", "7.0"), instance("1.1", "9.9"));
    let sealed = |uid: &str, tag: &str| triage_node::db::SealedRecord {
        sop_instance_uid: uid.into(),
        study_instance_uid: "7.0".into(),
        key_id: "k".into(),
        nonce: tag.into(),
        sealed: tag.into(),
        created_at_ms: 1,
    };
    let (sa, sa2, sb) = (sealed("7.1", "first"), sealed("7.1", "second"), sealed("7.2", "b"));
    let before = db.count_instances().await.unwrap();
    let outcomes = db.insert_instances(&[(&a, Some(&sa)), (&stored, None), (&a, Some(&sa2)), (&b, Some(&sb))]).await.unwrap();
    let dbr = &db;
    let id = |uid: &'static str| async move { dbr.find_instance(uid).await.unwrap().unwrap().id };
    assert_eq!(
        outcomes,
        [
            InsertOutcome::Inserted { instance_id: id("7.1").await },
            InsertOutcome::Duplicate { instance_id: id("1.1").await },
            InsertOutcome::Duplicate { instance_id: id("7.1").await },
            InsertOutcome::Inserted { instance_id: id("7.2").await },
        ]
    );
    assert_eq!(db.count_instances().await.unwrap(), before + 2);
    assert_eq!(db.reid_record("7.1").await.unwrap().unwrap().sealed, "first");

    // Drift crossings: each claimed once (a second claim of the same crossing changes nothing
    // and queues nothing), re-armed once below, then the next crossing claimed.
    let key = triage_node::db::DriftKey { model: "m".into(), model_version: "1".into(), label: "l".into(), scanner: String::new() };
    let notice = |n: u32| NewOutboxItem {
        path: format!("outbox/notify/drift{n}.json"),
        destination: "webhook:models".into(),
        kind: ObjectKind::Notice,
        study_id: None,
        reidentify: false,
    };
    let queued = || async { db.outbox_list(None).await.unwrap().into_iter().filter(|i| i.path.starts_with("outbox/notify/drift")).count() };
    assert!(db.drift_cross(&key, 1, 0.4, 10, "n1", &[notice(1)]).await.unwrap());
    assert!(!db.drift_cross(&key, 1, 0.4, 11, "n2", &[notice(2)]).await.unwrap(), "claimed once");
    assert!(!db.drift_cross(&key, 2, 0.4, 11, "n2", &[notice(2)]).await.unwrap(), "not below in between");
    assert_eq!(queued().await, 1);
    assert!(db.drift_rearm(&key, 0.05, 12).await.unwrap());
    assert!(!db.drift_rearm(&key, 0.05, 13).await.unwrap());
    assert!(db.drift_cross(&key, 2, 0.5, 14, "n1", &[notice(3)]).await.unwrap());
    let alerts = db.drift_alerts().await.unwrap();
    assert_eq!((alerts.len(), alerts[0].drifted, alerts[0].crossings, alerts[0].psi, alerts[0].changed_at_ms), (1, true, 2, Some(0.5), 14));
    assert_eq!(queued().await, 2);
    db.close().await;
}

#[tokio::test]
async fn database_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await;
}

#[tokio::test]
async fn database_suite_on_postgres() {
    let Some(url) = postgres_database().await else { return };
    suite(&url).await;
    drop_postgres_database(&url).await;
}

#[test]
fn node_stores_into_postgres() {
    if !peers_ready() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = rt.block_on(postgres_database()) else { return };
    let node = Node::start(NodeOptions { database_url: Some(url.clone()), ..Default::default() });
    assert!(node.log().contains("engine=Postgres"), "{}", node.log());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let out = node.storescu(std::slice::from_ref(&file));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Received Store Response (Success)"));
    let db = rt.block_on(Db::open(&url, 1)).unwrap();
    let (uid, ts) = meta_of(&file);
    assert_eq!(rt.block_on(db.find_instance(&deid_uid(&uid))).unwrap().unwrap().transfer_syntax_uid, ts);
    rt.block_on(db.close());
    drop(node);
    rt.block_on(drop_postgres_database(&url));
}

/// Queued work reaches every node listening (LISTEN/NOTIFY), at commit; SQLite has no listener.
async fn next(l: &mut triage_node::db::WakeListener) -> Option<triage_node::db::Wake> {
    tokio::time::timeout(std::time::Duration::from_secs(10), l.recv()).await.expect("a wake-up").unwrap()
}

#[tokio::test]
async fn queued_work_wakes_every_listening_node_on_postgres() {
    use triage_node::db::{Wake, WakeListener};
    let dir = tempfile::tempdir().unwrap();
    assert!(WakeListener::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap().is_none());
    let Some(url) = postgres_database().await else { return };
    let db = Db::open(&url, 2).await.unwrap();
    let (mut a, mut b) = (WakeListener::connect(&url).await.unwrap().unwrap(), WakeListener::connect(&url).await.unwrap().unwrap());
    db.outbox_enqueue("n1", "outbox/a.dcm", "PACS").await.unwrap();
    assert_eq!(next(&mut a).await, Some(Wake::Outbox));
    assert_eq!(next(&mut b).await, Some(Wake::Outbox));
    db.insert_instance(&instance("9.1", "9.9"), None).await.unwrap();
    db.attach_new_instances().await.unwrap();
    assert_eq!(db.promote_quiet_studies(i64::MAX / 2).await.unwrap().len(), 1);
    assert_eq!(next(&mut a).await, Some(Wake::Jobs));
    assert_eq!(next(&mut b).await, Some(Wake::Jobs));
    db.close().await;
    drop_postgres_database(&url).await;
}
