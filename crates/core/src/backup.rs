//! Backups: names, records, expiry and consistency.
//!
//! A backup name is `{service}.{YYYYMMDDTHHMMSSZ}.{run}`: service names cannot contain a dot,
//! so the prefix `{service}.` lists exactly one service's backups, the timestamp makes names
//! sort by time, and the first eight hex digits of the run id make it unique per run. It is a
//! valid blob name and is used as ARM's `backupName` as is.

use std::fmt;

use chrono::{NaiveDateTime, TimeZone, Utc};

use crate::Timestamp;
use crate::service::{ServiceRef, validate_service_name};
use crate::sku::Sku;

/// How long Azure keeps a backup restorable: 30 days from creation.
pub const BACKUP_LIFETIME: chrono::Duration = chrono::Duration::days(30);

const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// A backup's name: deterministic, sortable by time, unique per run, valid as a blob name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct BackupName(String);

/// The text is not a drsync backup name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a drsync backup name (`{{service}}.{{YYYYMMDDTHHMMSSZ}}.{{run}}`)")]
pub struct BadBackupName(pub String);

impl BackupName {
    /// The name of the backup of `service` started at `at` by run `run_id`.
    pub fn new(service: &str, at: Timestamp, run_id: uuid::Uuid) -> Self {
        let run = run_id.simple().to_string();
        Self(format!("{service}.{}.{}", at.format(STAMP), &run[..8]))
    }

    /// Parses a name made by [`BackupName::new`].
    pub fn parse(text: &str) -> Result<Self, BadBackupName> {
        let bad = || BadBackupName(text.into());
        let mut parts = text.split('.');
        let (Some(service), Some(stamp), Some(run), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        validate_service_name(service).map_err(|_| bad())?;
        NaiveDateTime::parse_from_str(stamp, STAMP).map_err(|_| bad())?;
        if run.len() != 8 || !run.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self(text.into()))
    }

    /// The name as text (also the blob name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The source service's name.
    pub fn service(&self) -> &str {
        self.0.split('.').next().expect("validated")
    }

    /// When the backup was started, to the second.
    pub fn started_at(&self) -> Timestamp {
        let stamp = self.0.split('.').nth(1).expect("validated");
        let naive = NaiveDateTime::parse_from_str(stamp, STAMP).expect("validated");
        Utc.from_utc_datetime(&naive)
    }

    /// The prefix under which every backup of `service` is listed.
    pub fn prefix_for(service: &str) -> String {
        format!("{service}.")
    }

    /// The name of the catalog sidecar blob kept beside the backup blob.
    pub fn sidecar_blob(&self) -> String {
        format!("{}.drsync.json", self.0)
    }
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for BackupName {
    type Error = BadBackupName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BackupName> for String {
    fn from(value: BackupName) -> Self {
        value.0
    }
}

/// Whether a backup is known to hold one consistent configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// The primary's configuration did not change while the backup ran.
    Consistent,
    /// The configuration changed during the backup: changes may be missing from it.
    Suspect,
    /// Not checked (for example, found in storage without a sidecar).
    Unknown,
}

/// What drsync knows of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// The backup (and blob) name.
    pub name: BackupName,
    /// The service it was taken from.
    pub source: ServiceRef,
    /// The source's SKU when the backup was taken; a restore target must have the same tier.
    pub sku: Sku,
    /// The storage account holding the blob.
    pub storage_account: String,
    /// The container holding the blob.
    pub container: String,
    /// When the backup completed (Azure's clock starts there).
    pub created_at: Timestamp,
    /// When Azure stops accepting it for restore.
    pub expires_at: Timestamp,
    /// The primary's `configurationChangeDate` read before the backup, if known.
    pub change_marker: Option<Timestamp>,
    /// Whether the configuration held still during the backup.
    pub consistency: Consistency,
}

impl BackupRecord {
    /// When a backup created at `created_at` expires.
    pub fn expiry_for(created_at: Timestamp) -> Timestamp {
        created_at + BACKUP_LIFETIME
    }

    /// Whether Azure still accepts the backup for restore at `now`. A backup is valid strictly
    /// before its expiry instant.
    pub fn is_restorable_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// How long until expiry (negative once expired).
    pub fn time_to_expiry(&self, now: Timestamp) -> chrono::Duration {
        self.expires_at - now
    }

    /// The age at `now`.
    pub fn age(&self, now: Timestamp) -> chrono::Duration {
        now - self.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SubscriptionId;
    use crate::sku::SkuTier;
    use proptest::prelude::*;

    fn at(secs: i64) -> Timestamp {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn record(created: Timestamp) -> BackupRecord {
        let sub = SubscriptionId::parse("00000000-1111-2222-3333-444444444444").unwrap();
        BackupRecord {
            name: BackupName::new("apim", created, uuid::Uuid::nil()),
            source: ServiceRef::new(sub, "rg", "apim").unwrap(),
            sku: Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
            storage_account: "acct".into(),
            container: "backups".into(),
            created_at: created,
            expires_at: BackupRecord::expiry_for(created),
            change_marker: None,
            consistency: Consistency::Consistent,
        }
    }

    #[test]
    fn names_are_sortable_parseable_and_scoped() {
        let run = uuid::Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000000);
        let a = BackupName::new("apim-prod", at(1_800_000_000), run);
        let b = BackupName::new("apim-prod", at(1_800_000_001), run);
        assert_eq!(a.as_str(), "apim-prod.20270115T080000Z.abcdef12");
        assert!(a < b);
        assert_eq!(BackupName::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.service(), "apim-prod");
        assert_eq!(a.started_at(), at(1_800_000_000));
        assert!(a.as_str().starts_with(&BackupName::prefix_for("apim-prod")));
        assert!(!a.as_str().starts_with(&BackupName::prefix_for("apim")));
        assert_eq!(
            a.sidecar_blob(),
            "apim-prod.20270115T080000Z.abcdef12.drsync.json"
        );
        for bad in [
            "apim",
            "apim.2027.abcdef12",
            "apim.20270115T080000Z.xyz",
            "a.b.c.d",
        ] {
            assert!(BackupName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_is_exactly_thirty_days() {
        let r = record(at(1_800_000_000));
        let boundary = at(1_800_000_000 + 30 * 86_400);
        assert_eq!(r.expires_at, boundary);
        assert!(r.is_restorable_at(boundary - chrono::Duration::seconds(1)));
        assert!(!r.is_restorable_at(boundary));
    }

    proptest! {
        #[test]
        fn expiry_boundary_holds_for_any_creation_time(created in 0i64..4_000_000_000, offset in -100_000i64..100_000) {
            let r = record(at(created));
            let now = at(created + 30 * 86_400 + offset);
            prop_assert_eq!(r.is_restorable_at(now), offset < 0);
            prop_assert_eq!(r.time_to_expiry(now), chrono::Duration::seconds(-offset));
        }
    }
}
