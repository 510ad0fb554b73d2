//! What seeding a datastore needs of the engine: a volume's creation time
//! and labels, and files placed in a running container through the
//! archive API (no helper image, works with a remote engine).

use std::collections::HashMap;

use std::path::Path;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::is_not_found;
use super::{Engine, EngineError};

/// A volume as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its full name (empty from `volume_info`, which was given it).
    pub name: String,
    /// The engine's creation time, as it wrote it.
    pub created: String,
    pub labels: HashMap<String, String>,
}

impl Engine {
    /// Volume `full_name`'s creation time and labels; `None` when it does not exist.
    pub async fn volume_info(&self, full_name: &str) -> Result<Option<VolumeInfo>, EngineError> {
        match self.docker.inspect_volume(full_name).await {
            Ok(v) => Ok(Some(VolumeInfo {
                name: v.name,
                created: v.created_at.unwrap_or_default(),
                labels: v.labels,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(EngineError::api(
                format!("inspecting volume `{full_name}`"),
                e,
            )),
        }
    }

    /// Places `files` (name, content) in directory `dir` of container `id`,
    /// readable by every user, since the server's client may run as another
    /// user. With `make_dir`, `dir` is made (mode 1777, as `/tmp`) if missing.
    pub async fn upload_files(
        &self,
        id: &str,
        dir: &str,
        files: &[(String, Vec<u8>)],
        make_dir: bool,
    ) -> Result<(), EngineError> {
        let what = || format!("copying seed files into `{id}`");
        let relative = dir.trim_matches('/').to_string();
        let result = (|| -> std::io::Result<Vec<u8>> {
            let mut tar = tar::Builder::new(Vec::new());
            if make_dir {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o1777);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, format!("{relative}/"), std::io::empty())?;
            }
            for (name, content) in files {
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o755);
                header.set_size(content.len() as u64);
                header.set_cksum();
                tar.append_data(
                    &mut header,
                    format!("{relative}/{name}"),
                    content.as_slice(),
                )?;
            }
            tar.into_inner()
        })();
        let packed = result.map_err(|e| EngineError::Api {
            what: what(),
            message: e.to_string(),
        })?;
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: "/".into(),
                    ..Default::default()
                }),
                bollard::body_full(packed.into()),
            )
            .await
            .map_err(|e| EngineError::api(what(), e))
    }

    /// The project's volumes that carry label `key` (`key` or `key=value`);
    /// every devstack project's with `project` empty.
    pub async fn volumes_with_label(
        &self,
        project: &str,
        key: &str,
    ) -> Result<Vec<VolumeInfo>, EngineError> {
        let owner = match project {
            "" => crate::plan::names::LABEL_PROJECT.to_string(),
            p => format!("{}={p}", crate::plan::names::LABEL_PROJECT),
        };
        let what = format!("listing the volumes of `{project}`");
        let list = self
            .volumes_labelled(vec![owner, key.to_string()], &what)
            .await?;
        Ok(list
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                created: v.created_at.unwrap_or_default(),
                labels: v.labels,
            })
            .collect())
    }

    /// Freezes every process of a container (the cgroup freezer): its files
    /// hold still while they are copied.
    pub async fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .pause_container(id)
            .await
            .map_err(|e| EngineError::api(format!("pausing `{id}`"), e))
    }

    /// Lets a paused container run again.
    pub async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(|e| EngineError::api(format!("unpausing `{id}`"), e))
    }

    /// Writes the archive (a tar of `<basename>/...`, owners and modes kept)
    /// of directory `dir` of container `id` to `file`, streamed.
    pub async fn download_dir_to(
        &self,
        id: &str,
        dir: &str,
        file: &Path,
    ) -> Result<(), EngineError> {
        let what = || format!("copying {dir} of `{id}` to {}", file.display());
        let io = |e: std::io::Error| EngineError::Api {
            what: what(),
            message: e.to_string(),
        };
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut tar = self.docker.download_from_container(
            id,
            Some(DownloadFromContainerOptions {
                path: dir.to_string(),
            }),
        );
        while let Some(chunk) = tar.next().await {
            let chunk = chunk.map_err(|e| EngineError::api(what(), e))?;
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)
    }

    /// Unpacks the tar in `file` at `parent` of (created) container `id`, streamed.
    pub async fn upload_tar_from(
        &self,
        id: &str,
        parent: &str,
        file: &Path,
    ) -> Result<(), EngineError> {
        let what = || format!("copying {} into `{id}`", file.display());
        let input = tokio::fs::File::open(file)
            .await
            .map_err(|e| EngineError::Api {
                what: what(),
                message: e.to_string(),
            })?;
        let chunks = futures::stream::unfold(input, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf.into()), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: parent.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(chunks),
            )
            .await
            .map_err(|e| EngineError::api(what(), e))
    }
}
