//! The stack's network and named volumes, created with the project's labels
//! and removed only when they carry them.

use std::collections::HashMap;

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};

use super::error::{is_conflict, is_not_found};
use super::{Engine, EngineError};
use crate::plan::names::{self, LABEL_PROJECT, LABEL_VOLUME};

impl Engine {
    /// Creates the project's bridge network unless it exists. A network of that
    /// name without the project label is someone else's and is not used.
    pub async fn ensure_network(&self, project: &str) -> Result<(), EngineError> {
        let name = names::network_name(project);
        match self.docker.inspect_network(&name, None).await {
            Ok(found) => {
                let owner = found.labels.as_ref().and_then(|l| l.get(LABEL_PROJECT));
                return if owner.map(String::as_str) == Some(project) {
                    Ok(())
                } else {
                    Err(EngineError::Foreign {
                        kind: "network",
                        name,
                        project: project.into(),
                    })
                };
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EngineError::api(format!("inspecting network `{name}`"), e)),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                LABEL_PROJECT.to_string(),
                project.to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Two devstack processes raced to create it: fine if it is ours now.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(EngineError::api(format!("creating network `{name}`"), e)),
        }
    }

    /// Removes the project's network if it exists and carries the project label.
    pub async fn remove_network(&self, project: &str) -> Result<bool, EngineError> {
        let name = names::network_name(project);
        match self.docker.inspect_network(&name, None).await {
            Ok(found) => {
                let owner = found.labels.as_ref().and_then(|l| l.get(LABEL_PROJECT));
                if owner.map(String::as_str) != Some(project) {
                    return Ok(false);
                }
                match self
                    .docker
                    .remove_network(found.id.as_deref().unwrap_or(&name))
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(EngineError::api(format!("removing network `{name}`"), e)),
                }
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(EngineError::api(format!("inspecting network `{name}`"), e)),
        }
    }

    /// Creates `<project>_<name>` unless it exists; returns true when it was
    /// created now (a fresh volume, which seed data may fill).
    pub async fn ensure_volume(&self, project: &str, name: &str) -> Result<bool, EngineError> {
        let full = names::volume_name(project, name);
        match self.docker.inspect_volume(&full).await {
            Ok(found) => {
                if found.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project) {
                    return Ok(false);
                }
                return Err(EngineError::Foreign {
                    kind: "volume",
                    name: full,
                    project: project.into(),
                });
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EngineError::api(format!("inspecting volume `{full}`"), e)),
        }
        let request = VolumeCreateRequest {
            name: Some(full.clone()),
            labels: Some(HashMap::from([
                (LABEL_PROJECT.to_string(), project.to_string()),
                (LABEL_VOLUME.to_string(), name.to_string()),
            ])),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| true)
            .map_err(|e| EngineError::api(format!("creating volume `{full}`"), e))
    }

    /// The names of the project's volumes (by label).
    pub async fn list_volumes(&self, project: &str) -> Result<Vec<String>, EngineError> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PROJECT}={project}")],
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| EngineError::api(format!("listing the volumes of `{project}`"), e))?;
        let mut names: Vec<String> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
            .map(|v| v.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes one volume by its full name.
    pub async fn remove_volume(&self, full_name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_volume(full_name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(EngineError::api(
                format!("removing volume `{full_name}`"),
                e,
            )),
        }
    }
}
