//! Images: find one locally, pull one with per-layer progress, build one
//! from a context.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use bollard::query_parameters::{BuildImageOptions, BuilderVersion, CreateImageOptions};
use futures::StreamExt;

use super::error::{is_not_found, message_of};
use super::{context, Engine, EngineError};
use crate::spec::Build;

/// How many lines of build output a failure report keeps.
const KEEP_LINES: usize = 30;

/// One line of build or pull output, for the progress display.
#[derive(Debug, Clone)]
pub enum ImageOutput {
    /// A line the builder printed (`Step 2/5 : RUN ...`, command output).
    Line(String),
    /// A pull's progress on one layer.
    Layer { layer: String, status: String },
}

impl Engine {
    /// The id of an image present on the engine, or `None`.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(EngineError::api(
                format!("inspecting image `{reference}`"),
                e,
            )),
        }
    }

    /// The id of an image present on the engine and made for `platform`
    /// (any platform when `None`), or `None`: an image of another platform
    /// under the same tag is pulled again, as `docker pull --platform` would.
    pub async fn local_image(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => match platform {
                Some(want) if !platform_matches(want, &platform_of(&image)) => Ok(None),
                _ => Ok(image.id),
            },
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(EngineError::api(
                format!("inspecting image `{reference}`"),
                e,
            )),
        }
    }

    /// An image's configuration (`Cmd`, `Env`, `WorkingDir`, ...) as JSON,
    /// without what differs between two builds of the same content (the
    /// classic builder's parent id in `Image`) or between builds of
    /// different contexts by design (the build-input label: a record of
    /// what was sent, not part of what runs).
    pub async fn image_config(&self, id: &str) -> Result<serde_json::Value, EngineError> {
        let image = self
            .docker
            .inspect_image(id)
            .await
            .map_err(|e| EngineError::api(format!("inspecting image `{id}`"), e))?;
        let mut config = serde_json::to_value(image.config).unwrap_or_default();
        if let Some(map) = config.as_object_mut() {
            for volatile in ["Image", "Hostname", "Domainname"] {
                map.remove(volatile);
            }
            if let Some(labels) = map.get_mut("Labels").and_then(|l| l.as_object_mut()) {
                labels.remove(LABEL_BUILD_INPUT);
            }
        }
        Ok(config)
    }

    /// Removes an image that nothing needs any more (a build a rebuild
    /// replaced): only an untagged one, never forced, so an image with a name
    /// (a pulled or pinned one) or one that any container uses stays. True
    /// when it was removed.
    pub async fn remove_unused_image(&self, id: &str) -> bool {
        match self.docker.inspect_image(id).await {
            Ok(image) if image.repo_tags.as_ref().is_none_or(|t| t.is_empty()) => {}
            _ => return false,
        }
        self.docker
            .remove_image(
                id,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .is_ok()
    }

    /// Pulls an image (for `platform`, when given), reporting each layer's
    /// progress, and returns its id. A registry that has the image only for
    /// other platforms is a failure naming what it has.
    pub async fn pull(
        &self,
        service: &str,
        image: &str,
        platform: Option<&str>,
        mut on_output: impl FnMut(ImageOutput),
    ) -> Result<String, EngineError> {
        // `name:tag` goes as from_image=name & tag=tag; a digest stays whole.
        let (from_image, tag) = split_tag(image);
        // What `docker pull` would send: production tags are private.
        let credentials = super::auth::credentials_for(image).map_err(|e| EngineError::Pull {
            service: service.into(),
            image: image.into(),
            message: e.to_string(),
        })?;
        let authenticated = credentials.is_some();
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from_image.to_string()),
                tag: tag.map(str::to_string),
                platform: platform.unwrap_or_default().to_string(),
                ..Default::default()
            }),
            None,
            credentials,
        );
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(EngineError::Pull {
                            service: service.into(),
                            image: image.into(),
                            message: refusal_hint(message, image, authenticated),
                        });
                    }
                    let status = info.status.unwrap_or_default();
                    match info.id {
                        Some(layer) => on_output(ImageOutput::Layer { layer, status }),
                        None => on_output(ImageOutput::Line(status)),
                    }
                }
                Err(e) => {
                    return Err(EngineError::Pull {
                        service: service.into(),
                        image: image.into(),
                        message: refusal_hint(message_of(&e), image, authenticated),
                    })
                }
            }
        }
        let pulled = match self.docker.inspect_image(image).await {
            Ok(found) => found,
            Err(e) if is_not_found(&e) => {
                return Err(EngineError::Pull {
                    service: service.into(),
                    image: image.into(),
                    message: "the engine reported success but the image is not there".into(),
                })
            }
            Err(e) => return Err(EngineError::api(format!("inspecting image `{image}`"), e)),
        };
        // An engine may pull a single-platform image whatever was asked
        // (only a multi-platform index is chosen from): say so here rather
        // than let the container fail to start with `exec format error`.
        if let Some(want) = platform {
            let got = platform_of(&pulled);
            if !platform_matches(want, &got) {
                return Err(EngineError::Pull {
                    service: service.into(),
                    image: image.into(),
                    message: format!(
                        "the registry has it for {got} only, not for {want} (the stack's `platform`); push a {want} image, or set `platform` to one it has"
                    ),
                });
            }
        }
        pulled.id.ok_or_else(|| EngineError::Pull {
            service: service.into(),
            image: image.into(),
            message: "the engine reported success but the image has no id".into(),
        })
    }

    /// The image under `tag` when it was built (by devstack) from exactly
    /// what building `build` now would send: the context as `.dockerignore`
    /// leaves it (contents, modes, links; the Dockerfile with it), the
    /// Dockerfile's path, arguments, target and platform. `None` when any
    /// differs, the tag moved to another image since, or there is no record
    /// (an engine without state keeps none): then it is built. A base image
    /// pulled anew under the same tag is not seen here (nor is it by a
    /// cached `docker build`, which also reuses its layers).
    ///
    /// The record is a file of devstack's state, not a label: a label is
    /// one more step of the classic builder, a container committed, which
    /// took about 3 s per build on fuse-overlayfs.
    pub async fn built_image(
        &self,
        service: &str,
        build: &Build,
        tag: &str,
        platform: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        let Some(file) = self.build_record_file(tag) else {
            return Ok(None);
        };
        let Some(record) = read_build_record(&file) else {
            return Ok(None);
        };
        let packed = self.pack_context(service, build).await?;
        if input_hash(&packed, build, platform) != record.input {
            return Ok(None);
        }
        Ok(self.image_id(tag).await?.filter(|id| *id == record.image))
    }

    async fn pack_context(&self, service: &str, build: &Build) -> Result<Vec<u8>, EngineError> {
        let context_dir = build.context.clone();
        let dockerfile = build.dockerfile.clone();
        tokio::task::spawn_blocking(move || context::pack(&context_dir, &dockerfile))
            .await
            .map_err(|e| EngineError::Context {
                service: service.into(),
                path: build.context.display().to_string(),
                message: e.to_string(),
            })?
            .map_err(|e| EngineError::Context {
                service: service.into(),
                path: e.path,
                message: e.message,
            })
    }

    /// Builds `build` into `tag` with the classic builder (BuildKit needs a
    /// session protocol this build does not carry) and returns the image id.
    /// A failure names the Dockerfile step and keeps the last lines of output.
    pub async fn build(
        &self,
        service: &str,
        build: &Build,
        tag: &str,
        platform: Option<&str>,
        mut on_output: impl FnMut(ImageOutput),
    ) -> Result<String, EngineError> {
        let packed = self.pack_context(service, build).await?;
        // What it is built from, for the record (kept only with a state root).
        let record = self
            .build_record_file(tag)
            .map(|file| (file, input_hash(&packed, build, platform)));
        let options = BuildImageOptions {
            dockerfile: build.dockerfile.trim_start_matches("./").to_string(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            buildargs: Some(
                build
                    .args
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            target: build.target.clone().unwrap_or_default(),
            // FROM images are pulled for it, and the image is marked with it.
            platform: platform.unwrap_or_default().to_string(),
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(packed.into())));
        let mut step = String::from("the start of the build");
        let mut last: VecDeque<String> = VecDeque::new();
        let mut image_id: Option<String> = None;
        let fail = |step: &str, message: String, last: &VecDeque<String>| EngineError::Build {
            service: service.into(),
            step: step.to_string(),
            message: message.trim().to_string(),
            output: last.iter().cloned().collect(),
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(fail(&step, message_of(&e), &last)),
            };
            if let Some(text) = info.stream {
                for line in text.lines() {
                    let line = line.trim_end();
                    if line.is_empty() {
                        continue;
                    }
                    if line.starts_with("Step ") {
                        step = line.to_string();
                    }
                    if last.len() == KEEP_LINES {
                        last.pop_front();
                    }
                    last.push_back(line.to_string());
                    on_output(ImageOutput::Line(line.to_string()));
                }
            }
            if let Some(status) = info.status {
                on_output(ImageOutput::Line(status));
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        let id = match image_id {
            Some(id) => id,
            None => self
                .image_id(tag)
                .await?
                .ok_or_else(|| fail(&step, "the builder produced no image".into(), &last))?,
        };
        // What it was built from, so the next `up` can skip an unchanged
        // build. A record that cannot be written costs only that skip.
        if let Some((file, input)) = record {
            let record = BuildRecord {
                input,
                image: id.clone(),
            };
            let _ = write_build_record(&file, &record);
        }
        Ok(id)
    }
}

/// What an image tagged by a build was built from (see
/// [`Engine::built_image`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRecord {
    /// [`input_hash`] of the build.
    pub input: String,
    /// The image it made.
    pub image: String,
}

/// The record file of the image tagged `tag` below `state_root`: one file
/// per tag (each service builds one at a time; two never share a file),
/// named by the tag's characters a file name may hold and a hash of it all.
pub fn build_record_file(state_root: &Path, tag: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let readable: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let digest = format!("{:x}", Sha256::digest(tag.as_bytes()));
    state_root
        .join("builds")
        .join(format!("{readable}-{}.json", &digest[..12]))
}

/// The record in `file`; `None` when missing or unreadable.
pub fn read_build_record(file: &Path) -> Option<BuildRecord> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Writes `record` to `file` whole (a temporary file renamed over it).
pub fn write_build_record(file: &Path, record: &BuildRecord) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec(record)?)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// The label images built by earlier devstack versions carry: the hash of
/// what they were built from (now a [`BuildRecord`]). Left out where two
/// images' configurations are compared.
pub const LABEL_BUILD_INPUT: &str = "dev.devstack.build-input";

/// The hash of a build's inputs: the packed context (deterministic: sorted,
/// fixed owners and times), the Dockerfile's path, the arguments (sorted),
/// the target and the platform, each length-prefixed.
pub fn input_hash(packed: &[u8], build: &Build, platform: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(b"devstack-build-input-1");
    part(packed);
    part(build.dockerfile.trim_start_matches("./").as_bytes());
    for (k, v) in &build.args {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    part(build.target.as_deref().unwrap_or_default().as_bytes());
    part(platform.unwrap_or_default().as_bytes());
    format!("sha256:{:x}", h.finalize())
}

/// An image's platform as Docker writes it: `os/arch[/variant]`.
fn platform_of(image: &bollard::models::ImageInspect) -> String {
    let os = image.os.as_deref().unwrap_or("unknown");
    let arch = image.architecture.as_deref().unwrap_or("unknown");
    match image.variant.as_deref().filter(|v| !v.is_empty()) {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    }
}

/// Whether an image of platform `got` serves a stack asking for `want`.
/// A variant is compared only when the stack names one, and each
/// architecture's default variant (`arm64/v8`, `amd64/v1`, `arm/v7`) is the
/// same as none, as containerd normalizes them.
fn platform_matches(want: &str, got: &str) -> bool {
    fn parts(p: &str) -> (&str, &str, &str) {
        let mut it = p.splitn(3, '/');
        let os = it.next().unwrap_or("");
        let arch = it.next().unwrap_or("");
        let variant = match (arch, it.next().unwrap_or("")) {
            ("arm64", "v8") | ("amd64", "v1") | ("arm", "v7") => "",
            (_, v) => v,
        };
        (os, arch, variant)
    }
    let (want_os, want_arch, want_variant) = parts(want);
    let (got_os, got_arch, got_variant) = parts(got);
    let named_variant = want.splitn(3, '/').nth(2).is_some();
    want_os == got_os && want_arch == got_arch && (!named_variant || want_variant == got_variant)
}

/// `registry:5000/app:1.2` → (`registry:5000/app`, Some(`1.2`)); digests are left whole.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], Some(&image[slash + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// A registry's refusal, with what devstack sent: whether credentials from
/// the Docker client's config went with the pull, and where to fix them.
fn refusal_hint(message: String, image: &str, authenticated: bool) -> String {
    let lower = message.to_ascii_lowercase();
    if !(lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("denied")
        || lower.contains("no basic auth credentials"))
    {
        return message;
    }
    let registry = super::auth::registry_of(image);
    let config = super::auth::config_file()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "~/.docker/config.json".into());
    if authenticated {
        format!("{message} (the registry `{registry}` refused the credentials from {config}: `docker login {registry}` again)")
    } else {
        format!("{message} (no credentials for `{registry}` in {config}: `docker login {registry}` first)")
    }
}

#[cfg(test)]
mod tests {
    use super::{
        build_record_file, platform_matches, read_build_record, split_tag, write_build_record,
        BuildRecord,
    };

    #[test]
    fn platforms_match_by_os_arch_and_a_named_variant() {
        for (want, got) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm", "linux/arm/v6"),
            ("linux/arm/v7", "linux/arm"),
            ("linux/amd64/v1", "linux/amd64"),
        ] {
            assert!(platform_matches(want, got), "{want} is served by {got}");
        }
        for (want, got) in [
            ("linux/arm64", "linux/amd64"),
            ("linux/amd64", "windows/amd64"),
            ("linux/arm/v6", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm"),
            ("linux/amd64/v3", "linux/amd64"),
        ] {
            assert!(
                !platform_matches(want, got),
                "{want} is not served by {got}"
            );
        }
    }

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("redis:7"), ("redis", Some("7")));
        assert_eq!(split_tag("reg:5000/app:1.2"), ("reg:5000/app", Some("1.2")));
        assert_eq!(split_tag("reg:5000/app"), ("reg:5000/app", Some("latest")));
        assert_eq!(split_tag("app@sha256:ab"), ("app@sha256:ab", None));
    }

    #[test]
    fn build_records_are_one_file_per_tag_written_whole() {
        let root = tempfile::tempdir().unwrap();
        let a = build_record_file(root.path(), "devstack-built:shop.web");
        // Tags that read the same once made file-name-safe stay apart.
        let b = build_record_file(root.path(), "devstack-built/shop.web");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(root.path().join("builds").as_path()));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("devstack-built_shop.web-"));
        assert_eq!(read_build_record(&a), None);
        let record = BuildRecord {
            input: "sha256:1".into(),
            image: "sha256:2".into(),
        };
        write_build_record(&a, &record).unwrap();
        assert_eq!(read_build_record(&a), Some(record));
        std::fs::write(&b, "not json").unwrap();
        assert_eq!(read_build_record(&b), None);
        // Nothing but the record is left in the directory.
        assert_eq!(std::fs::read_dir(a.parent().unwrap()).unwrap().count(), 2);
    }
}
