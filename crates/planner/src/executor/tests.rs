use super::*;
use crate::azure::fake::FakeAzure;
use crate::testing::{demo, service_ref};
use chrono::TimeZone;
use drsync_arm_client::blob::BlobStore;
use drsync_core::{ManualClock, Sku, SkuTier};
use parking_lot::Mutex;

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

struct Harness {
    azure: Arc<FakeAzure>,
    cp: Checkpoints,
    clock: Arc<ManualClock>,
    topo: Arc<Topology>,
    cancel: watch::Sender<bool>,
    events: Arc<Recorder>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    cancel_on: Mutex<Option<(String, &'static str, watch::Sender<bool>)>>,
    hook_on: Mutex<Option<(String, &'static str, Hook)>>,
    /// Cancels when this step finishes in this state (`failed`, ...).
    cancel_on_finished: Mutex<Option<(String, &'static str, watch::Sender<bool>)>>,
}

impl Observer for Recorder {
    fn event(&self, event: &Event) {
        if let (Event::State { step, state, .. }, Some((s, st, tx))) =
            (event, &*self.cancel_on.lock())
        {
            if step == s && state == st {
                let _ = tx.send(true);
            }
        }
        if let (Event::State { step, state, .. }, Some((s, st, hook))) =
            (event, &*self.hook_on.lock())
        {
            if step == s && state == st {
                hook();
            }
        }
        if let (Event::Finished { step, state, .. }, Some((s, st, tx))) =
            (event, &*self.cancel_on_finished.lock())
        {
            if step == s && state == st {
                let _ = tx.send(true);
            }
        }
        self.events.lock().push(event.clone());
    }
}

fn premium() -> Sku {
    Sku {
        tier: SkuTier::Premium,
        capacity: 1,
    }
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(now()));
    let azure = Arc::new(FakeAzure::new(clock.clone()));
    for name in ["apim-weu", "apim-neu", "apim-stg"] {
        azure.add_service(service_ref(name), premium());
    }
    azure.edit_service("apim-weu", |s| {
        s.apis = vec!["echo".into(), "orders".into()];
        s.change_date = Some(now() - chrono::Duration::days(1));
    });
    let (cancel, _) = watch::channel(false);
    Harness {
        azure,
        cp: Checkpoints::in_memory(),
        clock,
        topo: Arc::new(demo()),
        cancel,
        events: Arc::new(Recorder::default()),
    }
}

fn options() -> ExecOptions {
    ExecOptions {
        busy_poll: Duration::from_millis(1),
        busy_timeout: Duration::from_secs(5),
        ..ExecOptions::default()
    }
}

impl Harness {
    fn executor(&self, options: ExecOptions) -> Arc<Executor> {
        Executor::new(
            self.azure.clone(),
            self.cp.clone(),
            self.clock.clone(),
            self.topo.clone(),
            options,
            self.events.clone(),
            self.cancel.subscribe(),
        )
    }

    fn sync_plan(&self) -> Plan {
        let backups = catalog::entries(&self.cp).unwrap();
        Plan::sync(
            &self.topo,
            &backups,
            &self.cp.restores().unwrap(),
            self.clock.now(),
            None,
            false,
        )
        .unwrap()
    }

    async fn run(&self, plan: Plan, options: ExecOptions) -> (Outcome, RunRecord) {
        let ex = self.executor(options);
        let run = ex.create_run(plan, false).unwrap();
        let outcome = ex.execute(run.clone()).await.unwrap();
        (outcome, self.cp.run(run.run_id).unwrap().unwrap())
    }

    fn posts(&self, kind: OpKind) -> Vec<String> {
        self.azure
            .posts()
            .into_iter()
            .filter(|p| p.kind == kind && p.accepted)
            .map(|p| p.service)
            .collect()
    }

    fn refused_posts(&self) -> usize {
        self.azure.posts().iter().filter(|p| !p.accepted).count()
    }

    fn assert_targets_restored(&self) {
        let weu = self.azure.service_snapshot("apim-weu").unwrap();
        for t in ["apim-neu", "apim-stg"] {
            assert_eq!(
                self.azure.service_snapshot(t).unwrap().apis,
                weu.apis,
                "{t}"
            );
        }
    }
}

#[tokio::test]
async fn first_sync_backs_up_once_and_restores_every_target() {
    let h = harness();
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(h.posts(OpKind::Backup), ["apim-weu"]);
    let mut restores = h.posts(OpKind::Restore);
    restores.sort();
    assert_eq!(restores, ["apim-neu", "apim-stg"]);
    h.assert_targets_restored();

    let backups = catalog::entries(&h.cp).unwrap();
    assert_eq!(backups.len(), 1);
    let b = &backups[0].record;
    assert_eq!(b.consistency, Consistency::Consistent);
    assert_eq!(b.change_marker, Some(now() - chrono::Duration::days(1)));
    // The sidecar sits beside the backup blob.
    let store = h.azure.store("neubackups");
    let sidecar = catalog::read_sidecar(store.as_ref(), "apim-backups", &b.name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sidecar.backup, b.name);
    assert_eq!(sidecar.run_id, Some(run.run_id));
    assert_eq!(h.cp.restores().unwrap().len(), 2);
    // No lease is left behind.
    assert!(h.cp.leases().unwrap().is_empty());

    // A second sync within the RPO has nothing to do.
    assert!(h.sync_plan().is_empty());
}

#[tokio::test]
async fn steps_record_every_state_in_order() {
    let h = harness();
    h.run(h.sync_plan(), options()).await;
    let backup_states: Vec<&'static str> = h
        .events
        .events
        .lock()
        .iter()
        .filter_map(|e| match e {
            Event::State { step, state, .. } if step == "contoso-dr/backup" => Some(*state),
            _ => None,
        })
        .collect();
    assert_eq!(backup_states, ["intent", "accepted", "succeeded"]);
}

#[tokio::test]
async fn resume_polls_an_accepted_operation_instead_of_posting_again() {
    let h = harness();
    let ex = h.executor(options());
    let run = ex.create_run(h.sync_plan(), false).unwrap();
    // What a process killed right after `Accepted` leaves behind.
    let weu = service_ref("apim-weu");
    let storage = h.topo.storage("neu-backups").unwrap().target.clone();
    let name = BackupName::new("apim-weu", now(), run.run_id);
    h.azure
        .store("neubackups")
        .create_container("apim-backups")
        .await
        .unwrap();
    let Begun::Accepted(handle) = h
        .azure
        .begin(OpKind::Backup, &weu, &storage, &name)
        .await
        .unwrap()
    else {
        panic!("accepted expected")
    };
    let mut pre =
        h.cp.step(run.run_id, "contoso-dr/preflight")
            .unwrap()
            .unwrap();
    pre.state = StepState::Succeeded { at: now() };
    h.cp.put_step(&pre).unwrap();
    let mut rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    rec.backup = Some(name.clone());
    rec.change_marker = Some(now() - chrono::Duration::days(1));
    rec.attempt = 1;
    rec.state = StepState::Accepted {
        at: now(),
        poll: handle.0,
    };
    h.cp.put_step(&rec).unwrap();

    let outcome = ex.execute(run).await.unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 1, "no second backup POST");
    assert_eq!(h.posts(OpKind::Restore).len(), 2);
    assert_eq!(catalog::entries(&h.cp).unwrap()[0].record.name, name);
    h.assert_targets_restored();
}

#[tokio::test]
async fn an_intent_whose_post_went_through_is_settled_from_the_blob() {
    let h = harness();
    let ex = h.executor(options());
    let run = ex.create_run(h.sync_plan(), false).unwrap();
    // Killed after the POST, before `Accepted` was written: Azure runs the backup, the
    // checkpoint says only `Intent`.
    let weu = service_ref("apim-weu");
    let storage = h.topo.storage("neu-backups").unwrap().target.clone();
    let name = BackupName::new("apim-weu", now(), run.run_id);
    h.azure
        .store("neubackups")
        .create_container("apim-backups")
        .await
        .unwrap();
    h.azure
        .begin(OpKind::Backup, &weu, &storage, &name)
        .await
        .unwrap();
    let mut rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    rec.backup = Some(name.clone());
    rec.change_marker = Some(now() - chrono::Duration::days(1));
    rec.attempt = 1;
    rec.state = StepState::Intent { at: now() };
    h.cp.put_step(&rec).unwrap();

    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 1, "settled, not re-posted");
    let rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    assert!(
        rec.notes.iter().any(|n| n.contains("exists in storage")),
        "{:?}",
        rec.notes
    );
    h.assert_targets_restored();
}

#[tokio::test]
async fn an_intent_that_never_reached_azure_is_issued() {
    let h = harness();
    let ex = h.executor(options());
    let run = ex.create_run(h.sync_plan(), false).unwrap();
    let mut rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    rec.backup = Some(BackupName::new("apim-weu", now(), run.run_id));
    rec.attempt = 1;
    rec.state = StepState::Intent { at: now() };
    h.cp.put_step(&rec).unwrap();
    assert_eq!(ex.execute(run).await.unwrap(), Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 1);
    h.assert_targets_restored();
}

#[tokio::test]
async fn an_old_restore_intent_without_a_reading_is_settled_by_the_intent_time() {
    let h = harness();
    // First sync, then force a second one whose restore into apim-neu was posted but not
    // recorded.
    h.run(h.sync_plan(), options()).await;
    let plan = Plan::sync(
        &h.topo,
        &catalog::entries(&h.cp).unwrap(),
        &[],
        now(),
        Some("apim-neu"),
        false,
    )
    .unwrap();
    let ex = h.executor(options());
    let run = ex.create_run(plan, false).unwrap();
    let name = catalog::entries(&h.cp).unwrap()[0].record.name.clone();
    let storage = h.topo.storage("neu-backups").unwrap().target.clone();
    h.clock.advance(chrono::Duration::minutes(5));
    let mut rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    rec.backup = Some(name.clone());
    rec.state = StepState::Intent { at: h.clock.now() };
    // As written by a drsync that did not record the target's change date before the POST.
    let mut json = serde_json::to_value(&rec).unwrap();
    assert!(
        json.as_object_mut()
            .unwrap()
            .remove("target_before")
            .is_some()
    );
    let rec: StepRecord = serde_json::from_value(json).unwrap();
    assert_eq!(rec.target_before, None);
    h.cp.put_step(&rec).unwrap();
    h.azure
        .begin(OpKind::Restore, &service_ref("apim-neu"), &storage, &name)
        .await
        .unwrap();
    let before = h.posts(OpKind::Restore).len();
    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    assert_eq!(
        h.posts(OpKind::Restore).len(),
        before,
        "settled, not re-posted"
    );
}

impl Harness {
    /// After a first sync, a run forcing a second restore into `apim-neu`, with the clock five
    /// minutes on; returns the executor, the run, the backup and its storage.
    async fn forced_neu_restore(
        &self,
    ) -> (
        Arc<Executor>,
        RunRecord,
        BackupName,
        drsync_core::StorageTarget,
    ) {
        self.run(self.sync_plan(), options()).await;
        let plan = Plan::sync(
            &self.topo,
            &catalog::entries(&self.cp).unwrap(),
            &[],
            now(),
            Some("apim-neu"),
            false,
        )
        .unwrap();
        let ex = self.executor(options());
        let run = ex.create_run(plan, false).unwrap();
        let name = catalog::entries(&self.cp).unwrap()[0].record.name.clone();
        let storage = self.topo.storage("neu-backups").unwrap().target.clone();
        self.clock.advance(chrono::Duration::minutes(5));
        (ex, run, name, storage)
    }

    fn neu_changed(&self) -> Option<Timestamp> {
        self.azure.service_snapshot("apim-neu").unwrap().change_date
    }
}

#[tokio::test]
async fn a_restore_records_the_targets_change_date_before_its_post() {
    let h = harness();
    let (ex, run, _, _) = h.forced_neu_restore().await;
    let before = h.neu_changed();
    assert!(before.is_some(), "the first sync restored apim-neu");
    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    let rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    assert_eq!(rec.target_before, Some(ChangeReading { changed: before }));
    assert!(h.neu_changed() > before, "the restore changed the target");
}

#[tokio::test]
async fn a_restore_that_never_happened_is_not_settled_by_a_skewed_change_date() {
    let h = harness();
    let (ex, run, name, _) = h.forced_neu_restore().await;
    // Azure's clock runs 30 s ahead of drsync's: a change made 10 s before the intent (by
    // Azure's clock) is stamped 20 s after it by drsync's. The POST never reached Azure.
    let skewed = h.clock.now() + chrono::Duration::seconds(20);
    h.azure
        .edit_service("apim-neu", |s| s.change_date = Some(skewed));
    let mut rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    rec.backup = Some(name.clone());
    rec.target_before = Some(ChangeReading {
        changed: Some(skewed),
    });
    rec.state = StepState::Intent { at: h.clock.now() };
    h.cp.put_step(&rec).unwrap();
    let before = h.posts(OpKind::Restore).len();
    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    assert_eq!(
        h.posts(OpKind::Restore).len(),
        before + 1,
        "the restore that never happened is issued"
    );
    let rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    assert!(
        rec.notes.iter().any(|n| n.contains("never happened")),
        "{:?}",
        rec.notes
    );
    assert_ne!(h.neu_changed(), Some(skewed), "restored for real");
}

#[tokio::test]
async fn a_lost_restore_operation_is_settled_against_the_reading_before_its_post() {
    let h = harness();
    let (ex, run, name, _) = h.forced_neu_restore().await;
    // Accepted, but Azure no longer knows the operation, and it never ran; Azure's clock is
    // ahead, so its last change looks later than the acceptance by drsync's clock.
    let skewed = h.clock.now() + chrono::Duration::seconds(20);
    h.azure
        .edit_service("apim-neu", |s| s.change_date = Some(skewed));
    let mut rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    rec.backup = Some(name.clone());
    rec.target_before = Some(ChangeReading {
        changed: Some(skewed),
    });
    rec.state = StepState::Accepted {
        at: h.clock.now(),
        poll: serde_json::json!({ "fake_op": 999_999 }),
    };
    h.cp.put_step(&rec).unwrap();
    let before = h.posts(OpKind::Restore).len();
    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Restore).len(), before + 1);
    assert_ne!(h.neu_changed(), Some(skewed), "restored for real");
}

#[tokio::test]
async fn a_restore_that_happened_is_settled_without_a_second_post() {
    let h = harness();
    let (ex, run, name, storage) = h.forced_neu_restore().await;
    let reading = h.neu_changed();
    let intent_at = h.clock.now();
    let mut rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    rec.backup = Some(name.clone());
    rec.target_before = Some(ChangeReading { changed: reading });
    rec.state = StepState::Intent { at: intent_at };
    h.cp.put_step(&rec).unwrap();
    // The POST went through, then drsync died. Azure's clock runs 30 s behind drsync's, so
    // the restore's change date is before the intent by drsync's clock (the old rule would
    // have restored again), but after the reading taken before the POST.
    let neu = service_ref("apim-neu");
    h.azure
        .begin(OpKind::Restore, &neu, &storage, &name)
        .await
        .unwrap();
    for _ in 0..10 {
        h.azure.service(&neu).await.unwrap();
    }
    let behind = intent_at - chrono::Duration::seconds(30);
    assert!(Some(behind) > reading);
    h.azure
        .edit_service("apim-neu", |s| s.change_date = Some(behind));
    let before = h.posts(OpKind::Restore).len();
    assert_eq!(ex.execute(run.clone()).await.unwrap(), Outcome::Succeeded);
    assert_eq!(
        h.posts(OpKind::Restore).len(),
        before,
        "settled, not re-posted"
    );
    let rec =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    assert!(
        rec.notes.iter().any(|n| n.contains("changed after")),
        "{:?}",
        rec.notes
    );
    assert_eq!(
        h.cp.restores()
            .unwrap()
            .iter()
            .filter(|r| r.run_id == run.run_id)
            .count(),
        1
    );
}

#[tokio::test]
async fn cancellation_leaves_an_accepted_step_that_resumes_without_reposting() {
    let h = harness();
    h.azure.set_polls_per_op(20);
    *h.events.cancel_on.lock() = Some(("contoso-dr/backup".into(), "accepted", h.cancel.clone()));
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Interrupted);
    assert_eq!(run.status, RunStatus::Interrupted);
    let rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    assert_eq!(rec.state.name(), "accepted");
    assert!(
        h.posts(OpKind::Restore).is_empty(),
        "no step started after the interruption"
    );

    // Resume (a new executor, not cancelled).
    *h.events.cancel_on.lock() = None;
    h.cancel.send_replace(false);
    let ex = h.executor(options());
    let unfinished = ex.unfinished_run().unwrap().expect("resumable run");
    assert_eq!(unfinished.run_id, run.run_id);
    assert_eq!(ex.execute(unfinished).await.unwrap(), Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 1);
    assert_eq!(h.posts(OpKind::Restore).len(), 2);
    h.assert_targets_restored();
}

#[tokio::test]
async fn a_busy_service_is_waited_for() {
    let h = harness();
    h.azure.conflict_next_posts("apim-weu", 2);
    h.azure.busy_for_reads("apim-neu", 3);
    let (outcome, _) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(h.refused_posts(), 2);
    assert_eq!(h.posts(OpKind::Backup).len(), 1);
    h.assert_targets_restored();
}

#[tokio::test]
async fn a_service_that_stays_busy_is_reported_clearly() {
    let h = harness();
    h.azure.conflict_next_posts("apim-weu", 1_000);
    let opts = ExecOptions {
        busy_timeout: Duration::from_millis(30),
        ..options()
    };
    let (outcome, _) = h.run(h.sync_plan(), opts).await;
    let Outcome::Failed(failures) = outcome else {
        panic!("expected failure")
    };
    assert_eq!(failures[0].0, "contoso-dr/backup");
    assert!(
        failures[0]
            .1
            .starts_with("ServiceBusy: API Management service `apim-weu` is busy"),
        "{}",
        failures[0].1
    );
    assert!(h.posts(OpKind::Restore).is_empty());
}

#[tokio::test]
async fn sku_mismatch_read_from_azure_is_refused_before_any_post() {
    let h = harness();
    h.azure.edit_service("apim-neu", |s| {
        s.sku = Sku {
            tier: SkuTier::Standard,
            capacity: 1,
        }
    });
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    let Outcome::Failed(failures) = outcome else {
        panic!("expected failure")
    };
    assert!(failures[0].1.contains("SKU mismatch as read from Azure: source `apim-weu` is Premium, target `apim-neu` is Standard"), "{}", failures[0].1);
    assert!(h.azure.posts().is_empty(), "no POST at all");
    assert_eq!(run.status, RunStatus::Failed);
}

#[tokio::test]
async fn an_expired_backup_is_refused_before_any_post() {
    let h = harness();
    h.run(h.sync_plan(), options()).await;
    let posts = h.azure.posts().len();
    let entry = catalog::entries(&h.cp).unwrap().remove(0);
    h.clock.advance(chrono::Duration::days(31));
    let plan = Plan::restore(
        &h.topo,
        &catalog::entries(&h.cp).unwrap(),
        &entry.record.name,
        "apim-neu",
        h.clock.now(),
    )
    .unwrap();
    let (outcome, _) = h.run(plan, options()).await;
    let Outcome::Failed(failures) = outcome else {
        panic!("expected failure")
    };
    assert!(
        failures[0]
            .1
            .contains(&format!("backup `{}` expired at", entry.record.name)),
        "{}",
        failures[0].1
    );
    assert_eq!(h.azure.posts().len(), posts, "no new POST");
}

#[tokio::test]
async fn a_change_during_the_backup_marks_it_suspect_and_takes_another() {
    let h = harness();
    h.azure.change_during_next_backup("apim-weu");
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 2);
    let backups = catalog::entries(&h.cp).unwrap();
    assert_eq!(backups.len(), 2);
    assert_eq!(backups[0].record.consistency, Consistency::Suspect);
    assert_eq!(backups[1].record.consistency, Consistency::Consistent);
    let restore =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
            .unwrap();
    assert_eq!(
        restore.backup.as_ref(),
        Some(&backups[1].record.name),
        "restores use the consistent one"
    );
    let rec = h.cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap();
    assert!(
        rec.notes[0].contains("is suspect: `apim-weu` changed at"),
        "{:?}",
        rec.notes
    );
    h.assert_targets_restored();
}

#[tokio::test]
async fn without_retry_a_suspect_backup_is_kept_and_noted() {
    let h = harness();
    h.azure.change_during_next_backup("apim-weu");
    let (outcome, _) = h
        .run(
            h.sync_plan(),
            ExecOptions {
                retry_suspect: false,
                ..options()
            },
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(h.posts(OpKind::Backup).len(), 1);
    assert_eq!(
        catalog::entries(&h.cp).unwrap()[0].record.consistency,
        Consistency::Suspect
    );
}

#[tokio::test]
async fn continue_on_error_finishes_the_other_targets() {
    let h = harness();
    h.azure.fail_next_op(
        "apim-neu",
        "RestoreFailed",
        "Cannot restore: storage unreachable",
    );
    let (outcome, run) = h
        .run(
            h.sync_plan(),
            ExecOptions {
                continue_on_error: true,
                concurrency: 1,
                ..options()
            },
        )
        .await;
    let Outcome::Failed(failures) = outcome else {
        panic!("expected failure")
    };
    assert_eq!(
        failures,
        [(
            "contoso-dr/restore/apim-neu".to_owned(),
            "RestoreFailed: Cannot restore: storage unreachable".to_owned()
        )]
    );
    let steps: BTreeMap<String, &'static str> =
        h.cp.steps(run.run_id)
            .unwrap()
            .into_iter()
            .map(|s| (s.step_id, s.state.name()))
            .collect();
    assert_eq!(steps["contoso-dr/verify/apim-neu"], "skipped");
    assert_eq!(steps["contoso-dr/verify/apim-stg"], "succeeded");
    let Some(StepRecord {
        state: StepState::Failed { code, .. },
        ..
    }) =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-neu")
            .unwrap()
    else {
        panic!("failed state expected")
    };
    assert_eq!(code, "RestoreFailed");
}

#[tokio::test]
async fn fail_fast_stops_starting_steps() {
    let h = harness();
    h.azure.fail_next_op("apim-neu", "RestoreFailed", "boom");
    let (outcome, run) = h
        .run(
            h.sync_plan(),
            ExecOptions {
                concurrency: 1,
                ..options()
            },
        )
        .await;
    assert!(matches!(outcome, Outcome::Failed(_)));
    let steps: BTreeMap<String, &'static str> =
        h.cp.steps(run.run_id)
            .unwrap()
            .into_iter()
            .map(|s| (s.step_id, s.state.name()))
            .collect();
    assert_eq!(steps["contoso-dr/restore/apim-stg"], "pending");
}

#[tokio::test]
async fn a_lease_held_by_another_run_stops_the_run() {
    let h = harness();
    let weu = service_ref("apim-weu").resource_id();
    h.cp.try_lease(&weu, "other-run/step", chrono::Duration::minutes(10), now())
        .unwrap()
        .unwrap();
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    let Outcome::LeaseHeld { service, owner, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (service.as_str(), owner.as_str()),
        ("apim-weu", "other-run/step")
    );
    assert!(h.azure.posts().is_empty());
    assert_eq!(run.status, RunStatus::Interrupted);
}

#[tokio::test]
async fn restores_never_overlap_on_one_service_and_run_in_parallel_across_targets() {
    let h = harness();
    h.azure.set_polls_per_op(5);
    let (outcome, _) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Succeeded);
    // Both restores were accepted before either finished: they overlapped.
    let events = h.events.events.lock().clone();
    let pos = |step: &str, state: &str| {
        events
            .iter()
            .position(|e| matches!(e, Event::State { step: s, state: st, .. } if s == step && *st == state))
            .unwrap()
    };
    let neu_acc = pos("contoso-dr/restore/apim-neu", "accepted");
    let stg_acc = pos("contoso-dr/restore/apim-stg", "accepted");
    let neu_done = pos("contoso-dr/restore/apim-neu", "succeeded");
    let stg_done = pos("contoso-dr/restore/apim-stg", "succeeded");
    assert!(
        neu_acc < stg_done && stg_acc < neu_done,
        "restores ran in parallel"
    );
}

#[tokio::test]
async fn verification_names_what_the_restored_target_lacks() {
    let h = harness();
    let azure = h.azure.clone();
    *h.events.hook_on.lock() = Some((
        "contoso-dr/restore/apim-neu".into(),
        "succeeded",
        Box::new(move || azure.edit_service("apim-neu", |s| s.apis.retain(|a| a != "orders"))),
    ));
    let (outcome, _) = h.run(h.sync_plan(), options()).await;
    let Outcome::Failed(failures) = outcome else {
        panic!("expected failure")
    };
    assert_eq!(
        failures,
        [(
            "contoso-dr/verify/apim-neu".to_owned(),
            "VerificationFailed: APIs missing on `apim-neu`: orders".to_owned()
        )]
    );
}

#[tokio::test]
async fn the_backup_step_records_the_manifest_verification_uses() {
    let h = harness();
    h.run(h.sync_plan(), options()).await;
    // Read once, right after the backup, while the change marker held still.
    let rec =
        h.cp.steps(h.cp.runs().unwrap()[0].run_id)
            .unwrap()
            .into_iter()
            .find(|s| s.step_id == "contoso-dr/backup")
            .unwrap();
    let manifest = rec.manifest.unwrap();
    assert_eq!(manifest["APIs"], ["echo", "orders"]);
    assert_eq!(manifest.len(), 3);
}

#[test]
fn crash_points_parse() {
    assert_eq!(
        CrashPoint::parse("accepted:backup"),
        Some(CrashPoint {
            state: "accepted",
            kind: OpKind::Backup
        })
    );
    assert_eq!(CrashPoint::parse("posted:restore").unwrap().state, "posted");
    assert_eq!(CrashPoint::parse("accepted"), None);
    assert_eq!(CrashPoint::parse("later:backup"), None);
}

#[tokio::test]
async fn the_lease_is_renewed_while_a_busy_service_is_waited_for() {
    let h = harness();
    h.azure.conflict_next_posts("apim-weu", 5);
    let weu = service_ref("apim-weu").resource_id();
    // Every 409 costs ten minutes; the lease lives fifteen. Another process tries to take
    // the lease each time: the waiting step must have renewed it.
    let taken_by_other = Arc::new(Mutex::new(Vec::new()));
    let (clock, cp, seen) = (h.clock.clone(), h.cp.clone(), taken_by_other.clone());
    *h.events.hook_on.lock() = Some((
        "contoso-dr/backup".into(),
        "pending",
        Box::new(move || {
            clock.advance(chrono::Duration::minutes(10));
            let other = cp
                .try_lease(
                    &weu,
                    "other-run/step",
                    chrono::Duration::minutes(15),
                    clock.now(),
                )
                .unwrap();
            seen.lock().push(other.is_ok());
        }),
    ));
    let (outcome, _) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(*taken_by_other.lock(), vec![false; 5]);
    assert_eq!(h.posts(OpKind::Backup).len(), 1);
}

#[tokio::test]
async fn a_step_whose_lease_was_taken_meanwhile_posts_nothing_more() {
    let h = harness();
    h.azure.conflict_next_posts("apim-weu", 1);
    let weu = service_ref("apim-weu").resource_id();
    // The process stalls past its lease while the service is busy; another run takes it.
    let (clock, cp) = (h.clock.clone(), h.cp.clone());
    *h.events.hook_on.lock() = Some((
        "contoso-dr/backup".into(),
        "pending",
        Box::new(move || {
            clock.advance(chrono::Duration::minutes(20));
            cp.try_lease(
                &weu,
                "other-run/step",
                chrono::Duration::hours(1),
                clock.now(),
            )
            .unwrap()
            .expect("the stalled lease has lapsed");
        }),
    ));
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    let Outcome::LeaseHeld { owner, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(owner, "other-run/step");
    assert!(
        h.posts(OpKind::Backup).is_empty(),
        "no POST without the lease"
    );
    assert_eq!(run.status, RunStatus::Interrupted);
}

#[tokio::test]
async fn ctrl_c_after_a_failure_keeps_the_run_resumable_and_fail_fast() {
    let h = harness();
    h.azure.fail_next_op("apim-neu", "RestoreFailed", "boom");
    // The restore into apim-neu is POSTed first and fails after two polls; the one into
    // apim-stg is POSTed next and takes long, so it is still running at the Ctrl-C.
    let azure = h.azure.clone();
    *h.events.hook_on.lock() = Some((
        "contoso-dr/restore/apim-neu".into(),
        "accepted",
        Box::new(move || azure.set_polls_per_op(40)),
    ));
    *h.events.cancel_on_finished.lock() = Some((
        "contoso-dr/restore/apim-neu".into(),
        "failed",
        h.cancel.clone(),
    ));
    let (outcome, run) = h.run(h.sync_plan(), options()).await;
    assert_eq!(outcome, Outcome::Interrupted);
    assert_eq!(
        run.status,
        RunStatus::Interrupted,
        "an operation is still running"
    );
    let stg =
        h.cp.step(run.run_id, "contoso-dr/restore/apim-stg")
            .unwrap()
            .unwrap();
    assert_eq!(stg.state.name(), "accepted");

    // Resume: the running restore is polled to its end, nothing new is started (fail-fast),
    // and the earlier failure is reported.
    *h.events.cancel_on_finished.lock() = None;
    h.cancel.send_replace(false);
    let ex = h.executor(options());
    let unfinished = ex.unfinished_run().unwrap().expect("resumable run");
    assert_eq!(unfinished.run_id, run.run_id);
    let Outcome::Failed(failures) = ex.execute(unfinished).await.unwrap() else {
        panic!("the run had a failure")
    };
    assert_eq!(failures[0].0, "contoso-dr/restore/apim-neu");
    assert_eq!(h.posts(OpKind::Restore).len(), 2, "no restore POSTed twice");
    let steps: BTreeMap<String, &'static str> =
        h.cp.steps(run.run_id)
            .unwrap()
            .into_iter()
            .map(|s| (s.step_id, s.state.name()))
            .collect();
    assert_eq!(steps["contoso-dr/restore/apim-stg"], "succeeded");
    assert_eq!(steps["contoso-dr/verify/apim-stg"], "pending");
    assert_eq!(
        h.cp.run(run.run_id).unwrap().unwrap().status,
        RunStatus::Failed
    );
}
