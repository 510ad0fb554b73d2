//! Every devstack project on the engine, found by the project label on its
//! containers, networks and volumes (`devstack ls`, `devstack prune`); a
//! throwaway copy's network made with its owner's identity (`devstack
//! test`); a file read out of a container (the proxy's rendered config).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::DownloadFromContainerOptions;
use futures::TryStreamExt;

use super::containers::parse_rfc3339;
use super::error::{is_conflict, is_not_found};
use super::{Engine, EngineError};
use crate::plan::names::{self, LABEL_PROJECT};

/// The process that owns a throwaway copy: `<pid>:<start time>` (`-` when
/// the start time could not be read), on the copy's network.
pub const LABEL_OWNER: &str = "dev.devstack.owner";
/// Set (`true`) on a `devstack test` copy's network: its volumes are scratch.
pub const LABEL_TEST: &str = "dev.devstack.test";
/// When the copy's network was made, in seconds since the epoch.
pub const LABEL_CREATED: &str = "dev.devstack.created";

/// What the engine holds of one project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectObjects {
    pub project: String,
    /// Container names, and how many of them run.
    pub containers: Vec<String>,
    pub running: usize,
    pub network: Option<String>,
    pub volumes: Vec<String>,
    /// The oldest object's creation, seconds since the epoch.
    pub created: Option<i64>,
    /// [`LABEL_OWNER`] of its network.
    pub owner: Option<String>,
    /// [`LABEL_TEST`] on its network.
    pub test: bool,
}

/// The entry of the project an object's labels name, made on first sight.
fn slot<'a>(
    projects: &'a mut BTreeMap<String, ProjectObjects>,
    labels: &HashMap<String, String>,
) -> Option<&'a mut ProjectObjects> {
    let name = labels.get(LABEL_PROJECT)?;
    Some(
        projects
            .entry(name.clone())
            .or_insert_with(|| ProjectObjects {
                project: name.clone(),
                ..Default::default()
            }),
    )
}

impl Engine {
    /// Every project with a container, network or volume carrying the
    /// project label, by name.
    pub async fn devstack_projects(&self) -> Result<Vec<ProjectObjects>, EngineError> {
        let label = || vec![LABEL_PROJECT.to_string()];
        let mut projects: BTreeMap<String, ProjectObjects> = BTreeMap::new();
        let oldest = |p: &mut ProjectObjects, t: Option<i64>| {
            if let Some(t) = t.filter(|t| *t > 0) {
                p.created = Some(p.created.map_or(t, |c| c.min(t)));
            }
        };
        let containers = self
            .containers_labelled(label(), "listing devstack's containers")
            .await?;
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let Some(p) = slot(&mut projects, &labels) else {
                continue;
            };
            let name = c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            p.containers.push(name);
            if c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                p.running += 1;
            }
            oldest(p, c.created);
        }
        let networks = self
            .networks_labelled(label(), "listing devstack's networks")
            .await?;
        for n in networks {
            let labels = n.labels.unwrap_or_default();
            let Some(p) = slot(&mut projects, &labels) else {
                continue;
            };
            p.network = n.name.clone();
            p.owner = labels.get(LABEL_OWNER).cloned();
            p.test = labels.get(LABEL_TEST).map(String::as_str) == Some("true");
            let made = labels
                .get(LABEL_CREATED)
                .and_then(|t| t.parse().ok())
                .or_else(|| n.created.as_deref().and_then(parse_rfc3339));
            oldest(p, made);
        }
        let volumes = self
            .volumes_labelled(label(), "listing devstack's volumes")
            .await?;
        for v in volumes {
            let Some(p) = slot(&mut projects, &v.labels) else {
                continue;
            };
            p.volumes.push(v.name.clone());
            oldest(p, v.created_at.as_deref().and_then(parse_rfc3339));
        }
        Ok(projects.into_values().collect())
    }

    /// Creates the project's network with its owner's identity and `extra`
    /// labels (a throwaway copy), before `up` adopts it. A network of that
    /// name already there is an error: a copy's name is fresh.
    pub async fn create_owned_network(
        &self,
        project: &str,
        extra: &[(&str, String)],
    ) -> Result<(), EngineError> {
        let name = names::network_name(project);
        let mut labels: HashMap<String, String> =
            names::owner_labels(project).into_iter().collect();
        for (k, v) in extra {
            labels.insert((*k).to_string(), v.clone());
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(EngineError::Foreign {
                kind: "network",
                name,
                project: project.into(),
            }),
            Err(e) => Err(EngineError::api(format!("creating network `{name}`"), e)),
        }
    }

    /// The contents of one regular file in a container (running or not);
    /// `None` when it is not there.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let what = || format!("reading `{path}` from `{id}`");
        let tar: Vec<u8> = match self
            .docker
            .download_from_container(
                id,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
        {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(EngineError::api(what(), e)),
        };
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries = archive.entries().map_err(|e| EngineError::Api {
            what: what(),
            message: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let mut entry = entry;
            if entry.header().entry_type().is_file() {
                let mut text = Vec::new();
                entry.read_to_end(&mut text).map_err(|e| EngineError::Api {
                    what: what(),
                    message: e.to_string(),
                })?;
                return Ok(Some(text));
            }
        }
        Ok(None)
    }
}
