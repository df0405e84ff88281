//! End-to-end: drsync's Azure blob store against Azurite (Microsoft's storage emulator,
//! installed from npm and started by `drsync_tests::azurite`), over real sockets with Shared
//! Key authentication.

use std::sync::Arc;

use drsync_arm_client::blob::{self, BlobError, BlobStore};
use drsync_core::{Secret, StorageAccess, StorageTarget};
use drsync_tests::azurite::{ACCOUNT, Azurite, KEY};

fn open(azurite: &Azurite, key: &str) -> Arc<dyn BlobStore> {
    let target = StorageTarget {
        account: ACCOUNT.into(),
        container: "apim-backups".into(),
        endpoint: azurite.blob_endpoint(),
        access: StorageAccess::SystemAssignedIdentity,
    };
    blob::open(&target, Some(Secret::new(key)), None).expect("open the Azurite store")
}

#[tokio::test]
async fn container_checks_list_head_delete_and_sidecar_round_trip() {
    let azurite = Azurite::start().expect("start Azurite");
    let store = open(&azurite, KEY);
    let c = "apim-backups";

    // A missing container is its own error everywhere, not a generic 404.
    assert!(!store.container_exists(c).await.unwrap());
    let not_found = |e: BlobError| matches!(e, BlobError::ContainerNotFound { ref container, .. } if container == c);
    assert!(not_found(store.list(c, "").await.unwrap_err()));
    assert!(not_found(store.get(c, "x.drsync.json").await.unwrap_err()));
    assert!(not_found(store.head(c, "x").await.unwrap_err()));
    assert!(not_found(
        store.put(c, "x", b"1".to_vec().into()).await.unwrap_err()
    ));
    assert!(not_found(store.delete(c, "x").await.unwrap_err()));

    store.create_container(c).await.unwrap();
    store.create_container(c).await.unwrap(); // Already there: fine.
    assert!(store.container_exists(c).await.unwrap());
    assert!(store.list(c, "").await.unwrap().is_empty());

    // A backup blob, its catalog sidecar, and a neighbour that must not match the prefix.
    let backup = "apim-contoso-weu.20261127T120000Z.0a1b2c3d";
    let sidecar = format!("{backup}.drsync.json");
    let sidecar_json = serde_json::json!({
        "schema_version": 1,
        "backup": backup,
        "source": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim-contoso-weu",
        "sku": {"tier": "Premium", "capacity": 1},
        "consistency": "consistent",
    });
    let bytes = serde_json::to_vec_pretty(&sidecar_json).unwrap();
    store.put(c, backup, vec![7u8; 4096].into()).await.unwrap();
    store.put(c, &sidecar, bytes.clone().into()).await.unwrap();
    store
        .put(
            c,
            "apim-contoso-neu.20261127T120000Z.0a1b2c3d",
            b"other".to_vec().into(),
        )
        .await
        .unwrap();
    store
        .put(c, "dir/nested/blob", b"n".to_vec().into())
        .await
        .unwrap();

    let listed = store.list(c, "apim-contoso-weu.").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [backup, sidecar.as_str()]);
    assert_eq!(listed[0].size, 4096);
    assert_eq!(listed[1].size, bytes.len() as u64);
    assert_eq!(store.list(c, "").await.unwrap().len(), 4);
    assert_eq!(
        store.list(c, "dir/nes").await.unwrap()[0].name,
        "dir/nested/blob"
    );

    let head = store
        .head(c, &sidecar)
        .await
        .unwrap()
        .expect("the sidecar exists");
    assert_eq!(head.size, bytes.len() as u64);
    assert_eq!(head.last_modified, listed[1].last_modified);
    assert_eq!(store.head(c, "nope").await.unwrap(), None);

    let read = store.get(c, &sidecar).await.unwrap();
    let back: serde_json::Value = serde_json::from_slice(&read).unwrap();
    assert_eq!(back, sidecar_json);
    assert!(matches!(
        store.get(c, "nope").await.unwrap_err(),
        BlobError::BlobNotFound { .. }
    ));

    // Overwrite, then delete (twice: the second is a no-op).
    store.put(c, &sidecar, b"{}".to_vec().into()).await.unwrap();
    assert_eq!(store.get(c, &sidecar).await.unwrap().as_ref(), b"{}");
    store.delete(c, &sidecar).await.unwrap();
    store.delete(c, &sidecar).await.unwrap();
    let names: Vec<String> = store
        .list(c, "apim-contoso-weu.")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, [backup]);
}

#[tokio::test]
async fn a_wrong_key_is_access_denied_and_never_printed() {
    let azurite = Azurite::start().expect("start Azurite");
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let store = open(&azurite, wrong);
    let err = store.container_exists("apim-backups").await.unwrap_err();
    assert!(matches!(err, BlobError::AccessDenied { .. }), "{err}");
    assert!(!err.to_string().contains(wrong));
    assert!(!format!("{store:?}").contains(wrong));
    let err = store.create_container("apim-backups").await.unwrap_err();
    assert!(matches!(err, BlobError::AccessDenied { .. }), "{err}");
}
