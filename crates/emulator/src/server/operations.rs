//! Long-running operations on the wire: `backup` and `restore` POSTs (body validation, the
//! checks that need storage, the 202 with its polling headers) and the two polling URLs
//! (`operationresults` for `Location`, `operationsStatus` for `Azure-AsyncOperation`). What
//! happens when an operation ends is `crate::ops`.

use super::*;

/// Adds the polling headers (`Location`, plus `Azure-AsyncOperation` in that mode) and the retry
/// hints.
pub(super) fn polling_headers(
    app: &App,
    mut a: Answer,
    req: &Req,
    svc: &Service,
    op: &Operation,
) -> Answer {
    let base = format!("{}{}", req.base, svc.id());
    let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
    let (secs, ms) = retry_after(remaining_ms);
    // ARM's asynchronous-operation contract: `Azure-AsyncOperation` (when used) is the status
    // monitor, and `Location` is always there too, because a client of a POST with
    // `final-state-via: location` (the Azure SDKs) reads the final resource from it.
    if app.config.async_operation_header {
        a = a.header(
            "azure-asyncoperation",
            format!(
                "{base}/operationsStatus/{}?api-version={}",
                op.id, op.api_version
            ),
        );
    }
    a = a.header(
        "location",
        format!(
            "{base}/operationresults/{}?api-version={}",
            op.id, op.api_version
        ),
    );
    a.header("retry-after", secs.to_string())
        .header("retry-after-ms", ms.to_string())
}

/// `Retry-After` (whole seconds, 1..=60) and `retry-after-ms` (10..=60000) for an operation with
/// `remaining_ms` to go: the client is told to come back when it should be done.
pub(super) fn retry_after(remaining_ms: i64) -> (i64, i64) {
    let ms = remaining_ms.clamp(10, 60_000);
    let secs = ((remaining_ms + 999) / 1000).clamp(1, 60);
    (secs, ms)
}

pub(super) fn start_operation(
    app: &App,
    inner: &mut Inner,
    key: &ServiceKey,
    kind: OperationKind,
    api_version: &str,
    plan: Plan,
    fail_after_fraction: Option<f64>,
) -> Operation {
    let now = app.now_with(inner);
    let full = ops::duration(app, inner, kind);
    let d = match fail_after_fraction {
        Some(f) => {
            chrono::Duration::milliseconds((full.num_milliseconds() as f64 * f).round() as i64)
        }
        None => full,
    };
    let id = format!(
        "{}",
        uuid::Builder::from_random_bytes(inner.rng.random())
            .into_uuid()
            .simple()
    );
    let op = Operation {
        id: id.clone(),
        kind,
        service: key.clone(),
        api_version: api_version.to_owned(),
        started_at: now,
        completes_at: now + d,
        plan,
        status: OperationStatus::Running,
        ended_at: None,
    };
    inner.operations.insert(id.clone(), op.clone());
    if let Some(svc) = inner.services.get_mut(key) {
        svc.active_operation = Some(id);
        if kind != OperationKind::Create {
            svc.state = ProvisioningState::Updating;
        }
        svc.touch(now);
    }
    op
}

pub(super) async fn start_backup_restore(
    app: &Arc<App>,
    req: &Req,
    key: &ServiceKey,
    api_version: &str,
    kind: OperationKind,
) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let params = match BackupParams::parse(&body) {
        Ok(p) => p,
        Err(e) => return Answer::arm_error(&e),
    };
    // Checks that need no storage, under the lock.
    let (svc, now) = {
        let inner = app.inner.lock();
        let Some(svc) = inner.services.get(key) else {
            return Answer::arm_error(&not_found(key));
        };
        if svc.active_operation.is_some() || svc.state != ProvisioningState::Succeeded {
            return Answer::arm_error(&conflict(svc, &inner));
        }
        if !svc.sku.supports_backup_restore() {
            let what = if kind == OperationKind::Backup {
                "Backup"
            } else {
                "Restore"
            };
            return Answer::arm_error(&ArmError::new(
                400,
                "MethodNotAllowedInPricingTier",
                format!(
                    "{what} is not supported in the '{}' pricing tier. Backup and restore are available in Developer, Basic, Standard and Premium.",
                    svc.sku
                ),
            ));
        }
        (svc.clone(), app.now_with(&inner))
    };
    let loc = BlobLocation {
        account: params.storage_account.clone(),
        container: params.container.clone(),
        blob: params.backup_name.clone(),
    };
    let who = ServiceIdentity {
        id: svc.id(),
        principal_id: svc.principal_id.clone(),
        user_assigned: svc.user_assigned.clone(),
    };
    let access_checked = {
        let inner = app.inner.lock();
        ops::check_access(
            app,
            &inner,
            kind,
            &params.storage_account,
            &params.access,
            &who,
        )
    };
    // Checks that read storage, outside the lock.
    let plan: Result<Plan, ArmError> = match access_checked {
        Err(e) => Err(e),
        Ok(()) => match kind {
            OperationKind::Backup => {
                let store = app.accounts[&loc.account].store.clone();
                let create_container = api_version != "2021-08-01";
                let container_ok = if create_container {
                    Ok(())
                } else {
                    match store.container_exists(&loc.container).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(ops::blob_failure(
                            kind,
                            &loc,
                            &drsync_arm_client::blob::BlobError::ContainerNotFound {
                                account: loc.account.clone(),
                                container: loc.container.clone(),
                            },
                        )),
                        Err(e) => Err(ops::blob_failure(kind, &loc, &e)),
                    }
                };
                container_ok.map(|()| Plan::WriteBackup {
                    to: loc.clone(),
                    envelope: Box::new(Envelope::seal(Payload {
                        source: Source {
                            id: svc.id(),
                            name: svc.name.clone(),
                            location: svc.region.name().into(),
                        },
                        sku: SkuJson {
                            name: svc.sku.as_str().into(),
                            capacity: svc.capacity,
                        },
                        created_at: now,
                        api_version: api_version.to_owned(),
                        configuration_change_date: svc.configuration_change_date,
                        configuration: svc.config.clone(),
                    })),
                    create_container,
                })
            }
            _ => ops::read_backup(app, &loc, svc.sku, now)
                .await
                .map(|env| Plan::ApplyRestore {
                    config: env.payload.configuration,
                }),
        },
    };
    let mut inner = app.inner.lock();
    // Re-check: another request may have started an operation while storage was read.
    match inner.services.get(key) {
        None => return Answer::arm_error(&not_found(key)),
        Some(s) if s.active_operation.is_some() => {
            let e = conflict(s, &inner);
            return Answer::arm_error(&e);
        }
        Some(_) => {}
    }
    let failure_roll: f64 = inner.rng.random();
    let (plan, fraction) = match plan {
        Err(e) => (
            Plan::Fail(e),
            Some(app.config.durations.validation_fraction),
        ),
        Ok(_) if failure_roll < inner.faults.operation_failure => (
            Plan::Fail(ArmError::new(
                500,
                kind.failure_code(),
                format!(
                    "The {} operation failed unexpectedly midway (injected fault). Retry the operation.",
                    if kind == OperationKind::Backup {
                        "backup"
                    } else {
                        "restore"
                    }
                ),
            )),
            Some(0.5),
        ),
        Ok(p) => (p, None),
    };
    let op = start_operation(app, &mut inner, key, kind, api_version, plan, fraction);
    let svc = inner.services[key].clone();
    drop(inner);
    polling_headers(app, Answer::empty(202), req, &svc, &op)
}

/// The backup/restore request body, validated per access type.
#[derive(Debug)]
pub(super) struct BackupParams {
    pub(super) storage_account: String,
    pub(super) container: String,
    pub(super) backup_name: String,
    pub(super) access: AccessRequest,
}

impl BackupParams {
    pub(super) fn parse(body: &Value) -> Result<Self, ArmError> {
        let invalid = |m: String| ArmError::new(400, "InvalidParameters", m);
        let field = |name: &str| -> Result<String, ArmError> {
            match body.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) | None | Some(Value::Null) => Err(invalid(format!(
                    "'{name}' is required and must not be empty."
                ))),
                Some(_) => Err(invalid(format!("'{name}' must be a string."))),
            }
        };
        // An optional field is absent, null or a string; any other JSON type is refused rather
        // than read as absent (a numeric `accessType` must not silently mean `AccessKey`).
        let opt = |name: &str| -> Result<Option<String>, ArmError> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(format!("'{name}' must be a string."))),
            }
        };
        let storage_account = field("storageAccount")?;
        let container = field("containerName")?;
        let backup_name = field("backupName")?;
        if backup_name.len() > 1024 {
            return Err(invalid(
                "'backupName' must be at most 1024 characters.".into(),
            ));
        }
        let access_type = opt("accessType")?.unwrap_or_else(|| "AccessKey".into());
        let access_key = opt("accessKey")?;
        let client_id = opt("clientId")?;
        match access_type.as_str() {
            "AccessKey" => {
                if access_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
                    return Err(invalid(
                        "'accessKey' is required when 'accessType' is 'AccessKey'.".into(),
                    ));
                }
                if client_id.is_some() {
                    return Err(invalid("'clientId' is only valid when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
            }
            "SystemAssignedManagedIdentity" | "UserAssignedManagedIdentity" => {
                if access_key.is_some() {
                    return Err(invalid(format!(
                        "'accessKey' must not be set when 'accessType' is '{access_type}'."
                    )));
                }
                if access_type == "UserAssignedManagedIdentity" && client_id.is_none() {
                    return Err(invalid("'clientId' is required when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
                if access_type == "SystemAssignedManagedIdentity" && client_id.is_some() {
                    return Err(invalid("'clientId' is only valid when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
            }
            other => {
                return Err(invalid(format!(
                    "'accessType' '{other}' is not valid: use AccessKey, SystemAssignedManagedIdentity or UserAssignedManagedIdentity."
                )));
            }
        }
        Ok(Self {
            storage_account,
            container,
            backup_name,
            access: AccessRequest {
                access_type,
                access_key: access_key.map(drsync_core::Secret::new),
                client_id,
            },
        })
    }
}

pub(super) fn find_op(
    app: &App,
    key: &ServiceKey,
    id: &str,
) -> Result<(Operation, Option<Service>), ArmError> {
    let inner = app.inner.lock();
    match inner.operations.get(id) {
        Some(op) if &op.service == key => Ok((op.clone(), inner.services.get(key).cloned())),
        _ => Err(ArmError::new(
            404,
            "OperationNotFound",
            format!(
                "The operation '{id}' was not found for service '{}'.",
                key.name
            ),
        )),
    }
}

pub(super) fn poll(app: &App, req: &Req, key: &ServiceKey, id: &str) -> Answer {
    let (op, svc) = match find_op(app, key, id) {
        Ok(x) => x,
        Err(e) => return Answer::arm_error(&e),
    };
    match (&op.status, svc) {
        (OperationStatus::Running | OperationStatus::Completing, Some(svc)) => {
            let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
            let (secs, ms) = retry_after(remaining_ms);
            Answer::empty(202)
                .header(
                    "location",
                    format!(
                        "{}{}/operationresults/{}?api-version={}",
                        req.base,
                        svc.id(),
                        op.id,
                        op.api_version
                    ),
                )
                .header("retry-after", secs.to_string())
                .header("retry-after-ms", ms.to_string())
        }
        (OperationStatus::Failed(e), _) => Answer::arm_error(e),
        (_, Some(svc)) => Answer::json(200, svc.to_json(&app.config.tenant_id)),
        (_, None) => Answer::arm_error(&not_found(key)),
    }
}

pub(super) fn async_poll(
    app: &App,
    req: &Req,
    key: &ServiceKey,
    id: &str,
    api_version: &str,
) -> Answer {
    let (op, _) = match find_op(app, key, id) {
        Ok(x) => x,
        Err(e) => return Answer::arm_error(&e),
    };
    let url = format!("{}{}", req.base, req.path);
    let mut body = json!({"id": format!("{url}?api-version={api_version}"), "name": op.id, "startTime": ts(op.started_at)});
    match &op.status {
        OperationStatus::Running | OperationStatus::Completing => {
            body["status"] = json!("InProgress");
            let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
            let (secs, ms) = retry_after(remaining_ms);
            return Answer::json(200, body)
                .header("retry-after", secs.to_string())
                .header("retry-after-ms", ms.to_string());
        }
        OperationStatus::Succeeded => body["status"] = json!("Succeeded"),
        OperationStatus::Failed(e) => {
            body["status"] = json!("Failed");
            body["error"] = json!({"code": e.code, "message": e.message});
        }
    }
    if let Some(end) = op.ended_at {
        body["endTime"] = json!(ts(end));
    }
    Answer::json(200, body)
}
