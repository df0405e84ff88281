//! Long-running operations: durations, storage checks at start, and completion.
//!
//! An operation's outcome is decided when it starts ([`Plan`]): refusals found then (storage
//! access, SKU mismatch, expired or corrupt backups) fail it after `validation_fraction` of its
//! duration; an injected midway failure fails it halfway; otherwise it completes after its full
//! duration. Completion is done by [`settle`], called by a background ticker and before every
//! poll, so a poll at the deadline already sees the result. Blob I/O happens outside the state
//! lock, with the operation marked `Completing`; settlers take turns (`App::settling`), so a
//! request that arrives while the ticker is completing an operation waits for it rather than
//! answering 202 after the operation's end time.

use std::sync::Arc;

use bytes::Bytes;
use drsync_arm_client::blob::BlobError;
use drsync_core::{BACKUP_LIFETIME, SkuTier, Timestamp};
use rand::Rng as _;

use crate::envelope::{Envelope, EnvelopeError};
use crate::model::{
    ArmError, BlobLocation, OperationKind, OperationStatus, Plan, ProvisioningState,
};
use crate::state::{App, Inner};

/// The duration of an operation of `kind`: base times time scale times jitter.
pub(crate) fn duration(app: &App, inner: &mut Inner, kind: OperationKind) -> chrono::Duration {
    let d = &app.config.durations;
    let base = match kind {
        OperationKind::Backup => d.backup_secs,
        OperationKind::Restore => d.restore_secs,
        OperationKind::Create => d.create_secs,
        OperationKind::Update => d.update_secs,
    };
    let factor = if d.jitter > 0.0 {
        inner.rng.random_range(1.0 - d.jitter..=1.0 + d.jitter)
    } else {
        1.0
    };
    let ms = (base * app.config.time_scale * factor * 1000.0).round();
    chrono::Duration::milliseconds(ms as i64)
}

fn storage_failure(kind: OperationKind, message: String) -> ArmError {
    ArmError::new(400, kind.failure_code(), message)
}

/// Maps a blob error to the operation failure it causes.
pub(crate) fn blob_failure(kind: OperationKind, loc: &BlobLocation, e: &BlobError) -> ArmError {
    let msg = match e {
        BlobError::ContainerNotFound { .. } => format!(
            "Container '{}' was not found in storage account '{}'",
            loc.container, loc.account
        ),
        BlobError::BlobNotFound { .. } => format!(
            "Backup blob '{}' was not found in container '{}' of storage account '{}'",
            loc.blob, loc.container, loc.account
        ),
        BlobError::InvalidName(n) => format!(
            "Invalid container or blob name '{n}' for storage account '{}'",
            loc.account
        ),
        other => format!(
            "Storage account '{}' could not be used: {other}",
            loc.account
        ),
    };
    storage_failure(kind, msg)
}

/// What the caller may use to reach storage: the service's identities and the request.
#[derive(Debug, Clone)]
pub(crate) struct AccessRequest {
    pub access_type: String,
    pub access_key: Option<drsync_core::Secret>,
    pub client_id: Option<String>,
}

/// The identities a service presents.
#[derive(Debug, Clone)]
pub(crate) struct ServiceIdentity {
    pub id: String,
    pub principal_id: Option<String>,
    pub user_assigned: Vec<crate::config::UserAssignedIdentity>,
}

/// Checks that the service may use the storage account as requested.
pub(crate) fn check_access(
    app: &App,
    inner: &Inner,
    kind: OperationKind,
    account: &str,
    access: &AccessRequest,
    who: &ServiceIdentity,
) -> Result<(), ArmError> {
    let Some(acct) = app.accounts.get(account) else {
        return Err(storage_failure(
            kind,
            format!("Storage account '{account}' was not found"),
        ));
    };
    if inner.faults.region_down(acct.region) {
        return Err(ArmError::new(
            503,
            "ServiceUnavailable",
            format!(
                "Storage account '{account}' in region '{}' is unavailable",
                acct.region.display_name()
            ),
        ));
    }
    match access.access_type.as_str() {
        "AccessKey" => {
            let ok = access.access_key.as_ref().map(drsync_core::Secret::expose)
                == Some(acct.key.expose());
            if !ok {
                return Err(storage_failure(
                    kind,
                    format!(
                        "Access to storage account '{account}' was denied: the access key is not valid (AuthenticationFailed)"
                    ),
                ));
            }
        }
        "SystemAssignedManagedIdentity" => {
            let Some(principal) = &who.principal_id else {
                return Err(storage_failure(
                    kind,
                    "System-assigned managed identity is not enabled on the service; enable it or use AccessKey".into(),
                ));
            };
            if !app.granted(inner, account, &[who.id.clone(), principal.clone()]) {
                return Err(storage_failure(
                    kind,
                    format!(
                        "The service's managed identity '{principal}' is not authorized on storage account '{account}': it needs the 'Storage Blob Data Contributor' role (AuthorizationPermissionMismatch)"
                    ),
                ));
            }
        }
        "UserAssignedManagedIdentity" => {
            let client_id = access.client_id.clone().unwrap_or_default();
            let Some(uai) = who
                .user_assigned
                .iter()
                .find(|u| u.client_id.eq_ignore_ascii_case(&client_id))
            else {
                return Err(storage_failure(
                    kind,
                    format!(
                        "User-assigned managed identity with client id '{client_id}' is not assigned to the service"
                    ),
                ));
            };
            let principals = [
                uai.client_id.clone(),
                uai.principal_id.clone(),
                uai.resource_id.clone(),
            ];
            if !app.granted(inner, account, &principals) {
                return Err(storage_failure(
                    kind,
                    format!(
                        "The managed identity '{client_id}' is not authorized on storage account '{account}': it needs the 'Storage Blob Data Contributor' role (AuthorizationPermissionMismatch)"
                    ),
                ));
            }
        }
        other => {
            return Err(ArmError::new(
                400,
                "InvalidParameters",
                format!("Unknown accessType '{other}'"),
            ));
        }
    }
    Ok(())
}

/// Reads and checks a backup for restoring into a service of tier `target` at `now`.
pub(crate) async fn read_backup(
    app: &App,
    loc: &BlobLocation,
    target: SkuTier,
    now: Timestamp,
) -> Result<Envelope, ArmError> {
    let kind = OperationKind::Restore;
    let store = app.accounts[&loc.account].store.clone();
    let bytes = store
        .get(&loc.container, &loc.blob)
        .await
        .map_err(|e| blob_failure(kind, loc, &e))?;
    let corrupt = |e: &dyn std::fmt::Display| {
        storage_failure(
            kind,
            format!(
                "Backup blob '{}/{}' is corrupt: {e}",
                loc.container, loc.blob
            ),
        )
    };
    let env = Envelope::decode(&bytes).map_err(|e: EnvelopeError| corrupt(&e))?;
    let backup_tier = SkuTier::parse(&env.payload.sku.name).map_err(|e| corrupt(&e))?;
    if backup_tier != target {
        return Err(storage_failure(
            kind,
            format!("Cannot restore: current SKU is '{target}', backup SKU is '{backup_tier}'"),
        ));
    }
    if now - env.payload.created_at > BACKUP_LIFETIME {
        return Err(storage_failure(
            kind,
            "Cannot restore: backup expired".into(),
        ));
    }
    Ok(env)
}

/// Completes every operation whose time has come.
pub(crate) async fn settle(app: &Arc<App>) {
    // One settler at a time: a request arriving while the ticker completes an operation waits
    // for it, so once an operation's end time has passed every answer shows it finished.
    let _settling = app.settling.lock().await;
    let due: Vec<(String, Plan)> = {
        let mut inner = app.inner.lock();
        let now = app.now_with(&inner);
        let mut due = Vec::new();
        for op in inner.operations.values_mut() {
            if op.status == OperationStatus::Running && op.completes_at <= now {
                op.status = OperationStatus::Completing;
                due.push((op.id.clone(), op.plan.clone()));
            }
        }
        due
    };
    for (id, plan) in due {
        let result = execute(app, &id, plan).await;
        finish(app, &id, result);
        app.persist();
    }
}

/// Performs an operation's external effect (the blob write); returns the final outcome.
async fn execute(app: &Arc<App>, id: &str, plan: Plan) -> Result<Plan, ArmError> {
    match plan {
        Plan::Fail(e) => Err(e),
        Plan::WriteBackup {
            to,
            envelope,
            create_container,
        } => {
            let kind = OperationKind::Backup;
            let acct = &app.accounts[&to.account];
            {
                let inner = app.inner.lock();
                if inner.faults.region_down(acct.region) {
                    return Err(ArmError::new(
                        503,
                        "ServiceUnavailable",
                        format!(
                            "Storage account '{}' in region '{}' became unavailable during the backup",
                            to.account,
                            acct.region.display_name()
                        ),
                    ));
                }
            }
            let store = acct.store.clone();
            let exists = store
                .container_exists(&to.container)
                .await
                .map_err(|e| blob_failure(kind, &to, &e))?;
            if !exists {
                if create_container {
                    store
                        .create_container(&to.container)
                        .await
                        .map_err(|e| blob_failure(kind, &to, &e))?;
                } else {
                    return Err(blob_failure(
                        kind,
                        &to,
                        &BlobError::ContainerNotFound {
                            account: to.account.clone(),
                            container: to.container.clone(),
                        },
                    ));
                }
            }
            store
                .put(&to.container, &to.blob, Bytes::from(envelope.encode()))
                .await
                .map_err(|e| blob_failure(kind, &to, &e))?;
            tracing::debug!(operation = id, blob = %to.blob, "backup written");
            Ok(Plan::Provision)
        }
        other => Ok(other),
    }
}

fn finish(app: &Arc<App>, id: &str, result: Result<Plan, ArmError>) {
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let Some(op) = inner.operations.get_mut(id) else {
        return;
    };
    op.ended_at = Some(now);
    let key = op.service.clone();
    let kind = op.kind;
    let restore_config = match &result {
        Ok(Plan::ApplyRestore { config }) => Some(config.clone()),
        _ => None,
    };
    op.status = match &result {
        Ok(_) => OperationStatus::Succeeded,
        Err(e) => OperationStatus::Failed(e.clone()),
    };
    let failed = result.is_err();
    if let Some(svc) = inner.services.get_mut(&key) {
        if svc.active_operation.as_deref() == Some(id) {
            svc.active_operation = None;
            svc.state = ProvisioningState::Succeeded;
            svc.touch(now);
        }
        if let Some(config) = restore_config {
            svc.config = config;
            svc.config_changed(now);
            svc.last_operation_id = Some(id.to_owned());
        }
        if failed && kind == OperationKind::Create {
            // A failed creation leaves no service behind (ARM shows it Failed, then it can be deleted;
            // the emulator removes it so the name can be reused).
            inner.services.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
