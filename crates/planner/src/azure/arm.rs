//! [`AzureOps`] over `drsync_arm_client::ArmClient`: the real Azure (or the emulator).
//!
//! This adapter only translates: ARM errors become [`AzureError`] classes, the client's
//! `PollState` becomes an opaque [`OpHandle`], entity listings become name lists. Secrets (an
//! account key for `AccessKey` storage access) are resolved by the caller and kept as
//! `drsync_core::Secret`, never formatted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drsync_arm_client::blob::BlobStore;
use drsync_arm_client::{
    ArmClient, BackupAccess, BackupRestoreRequest, Error, LroStart, PollState, PollStep,
};
use drsync_core::{BackupName, Clock, ServiceRef, StorageTarget, Timestamp};

use super::{
    AzureError, AzureErrorKind, AzureOps, Begun, EntityKind, OpHandle, OpKind, PollStatus,
    ServiceState,
};

/// One storage target as the adapter knows it: drsync's own blob access and how the service
/// reaches it (or why it cannot).
#[derive(Debug, Clone)]
pub struct StorageBinding {
    /// drsync's blob store for the account.
    pub store: Arc<dyn BlobStore>,
    /// The `accessType` (and key) the backup/restore body carries, or the problem.
    pub access: Result<BackupAccess, String>,
}

/// Azure through an [`ArmClient`].
#[derive(Debug, Clone)]
pub struct ArmOps {
    client: ArmClient,
    clock: Arc<dyn Clock>,
    storage: BTreeMap<(String, String), StorageBinding>,
    rebase_polling: bool,
}

impl ArmOps {
    /// An adapter over `client`; `storage` maps (account, container) to its binding.
    pub fn new(
        client: ArmClient,
        clock: Arc<dyn Clock>,
        storage: BTreeMap<(String, String), StorageBinding>,
    ) -> Self {
        Self {
            client,
            clock,
            storage,
            rebase_polling: false,
        }
    }

    /// Rewrites the origin of saved polling URLs to the client's endpoint before polling. Only
    /// for the embedded emulator, which listens on a new loopback port every run: a checkpoint
    /// from the previous run names the old port. Never for Azure, whose endpoint is stable and
    /// where a foreign host must be refused.
    pub fn rebase_polling(mut self, on: bool) -> Self {
        self.rebase_polling = on;
        self
    }

    fn rebase(&self, state: &mut PollState) {
        let endpoint = self.client.endpoint();
        let fix = |text: &mut String| {
            if let Ok(mut url) = url::Url::parse(text) {
                let ok = url.set_scheme(endpoint.scheme()).is_ok()
                    && url.set_host(endpoint.host_str()).is_ok()
                    && url.set_port(endpoint.port()).is_ok();
                if ok {
                    *text = url.to_string();
                }
            }
        };
        fix(&mut state.resource_url);
        fix(&mut state.url);
        if let Some(l) = state.location.as_mut() {
            fix(l);
        }
    }

    /// The underlying client (for metrics).
    pub fn client(&self) -> &ArmClient {
        &self.client
    }

    fn binding(&self, target: &StorageTarget) -> Result<&StorageBinding, AzureError> {
        self.storage
            .get(&(target.account.clone(), target.container.clone()))
            .ok_or_else(|| {
                AzureError::new(
                    AzureErrorKind::Refused,
                    None,
                    format!(
                        "storage account `{}` container `{}` is not configured",
                        target.account, target.container
                    ),
                )
            })
    }
}

/// Classifies an arm-client error.
pub fn classify(e: &Error) -> AzureError {
    let message = e.to_string();
    let code = e.arm_code().filter(|c| !c.is_empty());
    let kind = match e {
        Error::Arm { status, .. } => match status {
            404 => AzureErrorKind::NotFound,
            409 => AzureErrorKind::Busy,
            429 => AzureErrorKind::Throttled,
            401 | 403 => AzureErrorKind::Denied,
            408 | 500..=599 => AzureErrorKind::Unavailable,
            _ => AzureErrorKind::Refused,
        },
        Error::Transport { .. } | Error::OutcomeUnknown { .. } | Error::PollTimeout { .. } => {
            AzureErrorKind::Unavailable
        }
        Error::OperationFailed { .. } if e.is_retryable() => AzureErrorKind::Busy,
        _ => AzureErrorKind::Refused,
    };
    AzureError {
        kind,
        code: code.map(str::to_owned),
        message,
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

#[async_trait::async_trait]
impl AzureOps for ArmOps {
    async fn service(&self, service: &ServiceRef) -> Result<ServiceState, AzureError> {
        let s = self
            .client
            .get_service(service)
            .await
            .map_err(|e| classify(&e))?;
        let sku = s.sku().map_err(|e| classify(&e))?;
        Ok(ServiceState {
            provisioning_state: s.provisioning_state.as_str().to_owned(),
            sku,
            location: s.location.clone(),
        })
    }

    async fn configuration_change_date(
        &self,
        service: &ServiceRef,
    ) -> Result<Option<Timestamp>, AzureError> {
        let s = self
            .client
            .sync_state(service)
            .await
            .map_err(|e| classify(&e))?;
        Ok(s.configuration_change_date)
    }

    async fn begin(
        &self,
        kind: OpKind,
        service: &ServiceRef,
        storage: &StorageTarget,
        backup: &BackupName,
    ) -> Result<Begun, AzureError> {
        let binding = self.binding(storage)?;
        let access = binding
            .access
            .clone()
            .map_err(|p| AzureError::new(AzureErrorKind::Refused, Some("StorageAccess"), p))?;
        let req = BackupRestoreRequest {
            storage_account: storage.account.clone(),
            container: storage.container.clone(),
            backup_name: backup.to_string(),
            access,
        };
        let started = match kind {
            OpKind::Backup => self.client.begin_backup(service, &req).await,
            OpKind::Restore => self.client.begin_restore(service, &req).await,
        };
        match started.map_err(|e| classify(&e))? {
            LroStart::Done(_) => Ok(Begun::Completed),
            LroStart::Pending(state) => Ok(Begun::Accepted(OpHandle(
                serde_json::to_value(&state).expect("poll states serialize"),
            ))),
        }
    }

    async fn poll(&self, handle: &OpHandle) -> Result<PollStatus, AzureError> {
        // A poll state that cannot be read or followed is reported as an operation Azure no
        // longer knows: the executor then settles the step by looking at the service and the
        // storage, as for an intent of unknown fate.
        let mut state: PollState = serde_json::from_value(handle.0.clone()).map_err(|e| {
            AzureError::new(
                AzureErrorKind::NotFound,
                Some("BadCheckpoint"),
                format!("saved poll state is unreadable: {e}"),
            )
        })?;
        if self.rebase_polling {
            self.rebase(&mut state);
        }
        match self.client.poll_once(&state).await {
            Ok(PollStep::Done(_)) => Ok(PollStatus::Succeeded),
            Ok(PollStep::Pending(next)) => {
                let retry_after = until(self.clock.now(), next.next_poll_at);
                Ok(PollStatus::Running {
                    handle: OpHandle(serde_json::to_value(&next).expect("poll states serialize")),
                    retry_after,
                })
            }
            // A 404 from the polling URL: the operation is unknown (expired, or a different
            // emulator instance). Whether it happened is settled by looking at the service.
            Err(Error::OperationFailed { status, body, .. })
                if status == "404" || body.code == "OperationNotFound" =>
            {
                Err(AzureError::new(
                    AzureErrorKind::NotFound,
                    Some(&body.code),
                    body.message.clone(),
                ))
            }
            Err(Error::OperationFailed { body, .. }) => Ok(PollStatus::Failed {
                code: body.code.clone(),
                message: body.message.clone(),
            }),
            Err(e @ Error::ForeignHost { .. }) => Err(AzureError::new(
                AzureErrorKind::NotFound,
                Some("ForeignHost"),
                e.to_string(),
            )),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn entity_names(
        &self,
        service: &ServiceRef,
        kind: EntityKind,
    ) -> Result<Vec<String>, AzureError> {
        let mut names: Vec<String> = match kind {
            EntityKind::Apis => self
                .client
                .list_apis(service)
                .await
                .map_err(|e| classify(&e))?
                .into_iter()
                .map(|a| a.name)
                .collect(),
            EntityKind::Products => self
                .client
                .list_products(service)
                .await
                .map_err(|e| classify(&e))?
                .into_iter()
                .map(|p| p.name)
                .collect(),
            EntityKind::NamedValues => self
                .client
                .list_named_values(service)
                .await
                .map_err(|e| classify(&e))?
                .into_iter()
                .map(|n| n.name)
                .collect(),
        };
        names.sort();
        Ok(names)
    }

    fn blob_store(&self, storage: &StorageTarget) -> Result<Arc<dyn BlobStore>, AzureError> {
        Ok(self.binding(storage)?.store.clone())
    }

    fn storage_access_problem(&self, storage: &StorageTarget) -> Option<String> {
        match self.binding(storage) {
            Ok(b) => b.access.as_ref().err().cloned(),
            Err(e) => Some(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drsync_arm_client::ArmErrorBody;

    fn arm(status: u16, code: &str) -> Error {
        Error::Arm {
            operation: "begin backup apim-weu".into(),
            status,
            body: Box::new(ArmErrorBody {
                code: code.into(),
                message: "said ARM".into(),
                ..Default::default()
            }),
            request_id: None,
            attempts: 1,
        }
    }

    #[test]
    fn arm_errors_map_to_what_the_executor_decides_on() {
        let cases = [
            (arm(404, "ResourceNotFound"), AzureErrorKind::NotFound),
            (arm(409, "Conflict"), AzureErrorKind::Busy),
            (
                arm(429, "SubscriptionRequestsThrottled"),
                AzureErrorKind::Throttled,
            ),
            (arm(403, "AuthorizationFailed"), AzureErrorKind::Denied),
            (arm(503, "ServiceUnavailable"), AzureErrorKind::Unavailable),
            (arm(400, "InvalidParameters"), AzureErrorKind::Refused),
            (
                Error::OutcomeUnknown {
                    operation: "begin backup apim-weu".into(),
                    message: "reset".into(),
                },
                AzureErrorKind::Unavailable,
            ),
            (
                Error::Transport {
                    operation: "get service".into(),
                    message: "refused".into(),
                    sent: false,
                    attempts: 3,
                },
                AzureErrorKind::Unavailable,
            ),
            (Error::InvalidConfig("bad".into()), AzureErrorKind::Refused),
        ];
        for (error, kind) in cases {
            let classified = classify(&error);
            assert_eq!(classified.kind, kind, "{error}");
            assert_eq!(classified.message, error.to_string());
        }
        assert_eq!(
            classify(&arm(409, "Conflict")).code.as_deref(),
            Some("Conflict")
        );
        assert_eq!(classify(&Error::InvalidConfig("x".into())).code, None);
    }
}
