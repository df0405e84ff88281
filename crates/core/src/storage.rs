//! Where backups are kept, and how an API Management service reaches that storage.

use crate::secret::SecretRef;

/// How the API Management service authenticates to the storage account during backup and
/// restore (the `accessType` of ARM's backup/restore body).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StorageAccess {
    /// A storage account key, passed in the request body. Holds a reference, never the key.
    AccountKey(SecretRef),
    /// The service's system-assigned managed identity (needs `Storage Blob Data Contributor`).
    SystemAssignedIdentity,
    /// One of the service's user-assigned managed identities, by client id.
    UserAssignedIdentity {
        /// The identity's client (application) id.
        client_id: String,
    },
}

impl StorageAccess {
    /// ARM's `accessType` value.
    pub fn access_type(&self) -> &'static str {
        match self {
            Self::AccountKey(_) => "AccessKey",
            Self::SystemAssignedIdentity => "SystemAssignedManagedIdentity",
            Self::UserAssignedIdentity { .. } => "UserAssignedManagedIdentity",
        }
    }
}

/// A blob container that holds backups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StorageTarget {
    /// The storage account name (3-24 lowercase letters and digits).
    pub account: String,
    /// The container.
    pub container: String,
    /// The blob service endpoint drsync itself uses to list and read blobs, for example
    /// `https://{account}.blob.core.windows.net` or Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    /// How the API Management service reaches the account.
    pub access: StorageAccess,
}

impl StorageTarget {
    /// The public-cloud blob endpoint of an account.
    pub fn default_endpoint(account: &str) -> String {
        format!("https://{account}.blob.core.windows.net")
    }
}

/// Checks a storage account name: 3-24 characters, lowercase letters and digits only.
pub fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks a container name: 3-63 characters, lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
pub fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_rules() {
        assert!(valid_account_name("drsyncweu01"));
        assert!(!valid_account_name("Dr"));
        assert!(!valid_account_name("has-hyphen"));
        assert!(valid_container_name("apim-backups"));
        assert!(!valid_container_name("ab"));
        assert!(!valid_container_name("a--b"));
        assert!(!valid_container_name("Backups"));
    }

    #[test]
    fn access_types_use_arm_names() {
        assert_eq!(
            StorageAccess::AccountKey(SecretRef::Env("K".into())).access_type(),
            "AccessKey"
        );
        assert_eq!(
            StorageAccess::SystemAssignedIdentity.access_type(),
            "SystemAssignedManagedIdentity"
        );
        let ua = StorageAccess::UserAssignedIdentity {
            client_id: "c".into(),
        };
        assert_eq!(ua.access_type(), "UserAssignedManagedIdentity");
    }
}
