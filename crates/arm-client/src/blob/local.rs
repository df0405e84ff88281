//! A storage account kept in a local directory: `{root}/{container}/{blob}`.
//!
//! Used by the embedded emulator and by drsync in embedded mode, so both read and write the
//! same files. Blob names may contain `/` (virtual directories), as in Azure; `..` segments
//! and absolute names are refused. Writes go to a temporary file and are renamed into place,
//! so a reader never sees half a blob.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::{BlobError, BlobMeta, BlobResult, BlobStore};

/// A storage account backed by a directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    account: String,
    root: PathBuf,
}

impl LocalDirStore {
    /// The account `account`, kept under `root` (created on first write).
    pub fn new(account: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Self {
            account: account.into(),
            root: root.into(),
        }
    }

    /// The directory holding this account's containers.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn other(&self, e: impl std::fmt::Display) -> BlobError {
        BlobError::Other {
            account: self.account.clone(),
            message: e.to_string(),
        }
    }

    fn container_dir(&self, container: &str) -> BlobResult<PathBuf> {
        if !drsync_core::storage::valid_container_name(container) {
            return Err(BlobError::InvalidName(container.into()));
        }
        Ok(self.root.join(container))
    }

    async fn existing_container(&self, container: &str) -> BlobResult<PathBuf> {
        let dir = self.container_dir(container)?;
        if tokio::fs::metadata(&dir)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            Ok(dir)
        } else {
            Err(BlobError::ContainerNotFound {
                account: self.account.clone(),
                container: container.into(),
            })
        }
    }

    fn blob_path(dir: &Path, blob: &str) -> BlobResult<PathBuf> {
        let rel = Path::new(blob);
        let safe = !blob.is_empty()
            && !blob.ends_with('/')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if safe {
            Ok(dir.join(rel))
        } else {
            Err(BlobError::InvalidName(blob.into()))
        }
    }

    fn not_found(&self, container: &str, blob: &str) -> BlobError {
        BlobError::BlobNotFound {
            account: self.account.clone(),
            container: container.into(),
            blob: blob.into(),
        }
    }

    fn meta(name: String, md: &std::fs::Metadata) -> BlobMeta {
        let last_modified = md
            .modified()
            .map(chrono::DateTime::from)
            .unwrap_or_default();
        BlobMeta {
            name,
            size: md.len(),
            last_modified,
        }
    }
}

fn walk(
    dir: &Path,
    base: &Path,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.metadata()?;
        let path = entry.path();
        if md.is_dir() {
            walk(&path, base, out)?;
        } else if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let rel = path.strip_prefix(base).expect("under base");
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>();
            out.push((name.join("/"), md));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl BlobStore for LocalDirStore {
    fn account(&self) -> &str {
        &self.account
    }

    async fn container_exists(&self, container: &str) -> BlobResult<bool> {
        let dir = self.container_dir(container)?;
        Ok(tokio::fs::metadata(&dir)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false))
    }

    async fn create_container(&self, container: &str) -> BlobResult<()> {
        let dir = self.container_dir(container)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.other(e))
    }

    async fn list(&self, container: &str, prefix: &str) -> BlobResult<Vec<BlobMeta>> {
        let dir = self.existing_container(container).await?;
        let base = dir.clone();
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&dir, &base, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| self.other(e))?
        .map_err(|e| self.other(e))?;
        found.retain(|(name, _)| name.starts_with(prefix));
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found
            .into_iter()
            .map(|(name, md)| Self::meta(name, &md))
            .collect())
    }

    async fn head(&self, container: &str, blob: &str) -> BlobResult<Option<BlobMeta>> {
        let dir = self.existing_container(container).await?;
        let path = Self::blob_path(&dir, blob)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(Some(Self::meta(blob.into(), &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.other(e)),
        }
    }

    async fn get(&self, container: &str, blob: &str) -> BlobResult<Bytes> {
        let dir = self.existing_container(container).await?;
        let path = Self::blob_path(&dir, blob)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.not_found(container, blob))
            }
            Err(e) => Err(self.other(e)),
        }
    }

    async fn put(&self, container: &str, blob: &str, data: Bytes) -> BlobResult<()> {
        let dir = self.existing_container(container).await?;
        let path = Self::blob_path(&dir, blob)?;
        let parent = path.parent().expect("blob has a parent").to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| self.other(e))?;
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, &data)
            .await
            .map_err(|e| self.other(e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| self.other(e))
    }

    async fn delete(&self, container: &str, blob: &str) -> BlobResult<()> {
        let dir = self.existing_container(container).await?;
        let path = Self::blob_path(&dir, blob)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_distinct_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new("acct", tmp.path());
        let err = store.list("backups", "").await.unwrap_err();
        assert!(matches!(err, BlobError::ContainerNotFound { .. }), "{err}");
        assert!(!store.container_exists("backups").await.unwrap());
        store.create_container("backups").await.unwrap();
        store.create_container("backups").await.unwrap();
        assert!(store.container_exists("backups").await.unwrap());

        store
            .put("backups", "svc.b", Bytes::from_static(b"two"))
            .await
            .unwrap();
        store
            .put("backups", "svc.a", Bytes::from_static(b"one"))
            .await
            .unwrap();
        store
            .put("backups", "dir/other", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let names: Vec<_> = store
            .list("backups", "svc.")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["svc.a", "svc.b"]);
        assert_eq!(
            store.list("backups", "dir/").await.unwrap()[0].name,
            "dir/other"
        );
        assert_eq!(
            store.get("backups", "svc.b").await.unwrap(),
            Bytes::from_static(b"two")
        );
        assert_eq!(
            store.head("backups", "svc.a").await.unwrap().unwrap().size,
            3
        );
        assert_eq!(store.head("backups", "nope").await.unwrap(), None);
        let err = store.get("backups", "nope").await.unwrap_err();
        assert!(matches!(err, BlobError::BlobNotFound { .. }), "{err}");
        store.delete("backups", "svc.a").await.unwrap();
        store.delete("backups", "svc.a").await.unwrap();
        assert_eq!(store.list("backups", "svc.").await.unwrap().len(), 1);
        assert!(matches!(
            store.get("backups", "../x").await,
            Err(BlobError::InvalidName(_))
        ));
    }
}
