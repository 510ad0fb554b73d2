//! The stack's network and named volumes, created with the project's labels
//! and removed only when they carry them, and moving a directory's data
//! from one container into another's volume.

use std::collections::HashMap;

use bollard::models::{ContainerSummary, Network, Volume};
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    ContainerArchiveInfoOptions, DownloadFromContainerOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions, UploadToContainerOptions,
};
use futures::TryStreamExt;

use super::containers::parse_rfc3339;
use super::error::{is_conflict, is_not_found};
use super::{Engine, EngineError};
use crate::plan::names::{self, LABEL_PROJECT, LABEL_VOLUME};
use crate::plan::ContainerSpec;

/// A filter for the engine's list calls: objects that carry every label
/// given (`key`, or `key=value`).
fn labelled(labels: Vec<String>) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), labels)])
}

/// A network's IPv4 gateway: the one its IPAM configuration names, else the
/// first address of its subnet, which is where the engine puts the bridge
/// when the configuration names none (some engines leave `Gateway` out of the
/// default bridge's configuration).
pub(super) fn ipv4_gateway(ipam: Option<&bollard::models::Ipam>) -> Option<std::net::IpAddr> {
    let configs = ipam?.config.as_ref()?;
    let named = configs
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse::<std::net::IpAddr>().ok())
        .find(std::net::IpAddr::is_ipv4);
    named.or_else(|| {
        configs.iter().find_map(|c| {
            let (base, len) = c.subnet.as_deref()?.split_once('/')?;
            let base: std::net::Ipv4Addr = base.parse().ok()?;
            let len: u32 = len.parse().ok()?;
            if len > 30 {
                return None;
            }
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Some(std::net::IpAddr::V4(
                (u32::from(base) & mask).wrapping_add(1).into(),
            ))
        })
    })
}

impl Engine {
    /// The IPv4 gateway of the network `network` (a name or id), if the
    /// engine has that network and it has one.
    pub(super) async fn gateway_of(&self, network: &str) -> Option<std::net::IpAddr> {
        let found = self.docker.inspect_network(network, None).await.ok()?;
        ipv4_gateway(found.ipam.as_ref())
    }

    /// Every container, running or not, carrying every label given; `what`
    /// names the listing in an error.
    pub(crate) async fn containers_labelled(
        &self,
        labels: Vec<String>,
        what: &str,
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(labelled(labels)),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| EngineError::api(what, e))
    }

    /// Every volume carrying every label given; `what` names the listing in an error.
    pub(crate) async fn volumes_labelled(
        &self,
        labels: Vec<String>,
        what: &str,
    ) -> Result<Vec<Volume>, EngineError> {
        let filters = Some(labelled(labels));
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions { filters }))
            .await
            .map_err(|e| EngineError::api(what, e))?;
        Ok(list.volumes.unwrap_or_default())
    }

    /// Every network carrying every label given; `what` names the listing in an error.
    pub(crate) async fn networks_labelled(
        &self,
        labels: Vec<String>,
        what: &str,
    ) -> Result<Vec<Network>, EngineError> {
        let filters = Some(labelled(labels));
        self.docker
            .list_networks(Some(ListNetworksOptions { filters }))
            .await
            .map_err(|e| EngineError::api(what, e))
    }

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
            labels: Some(names::owner_labels(project).into()),
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
        self.ensure_volume_with(project, name, &[]).await
    }

    /// As [`Engine::ensure_volume`], with `extra` labels on a volume it creates
    /// (an existing volume keeps the labels it has: the engine cannot change them).
    pub async fn ensure_volume_with(
        &self,
        project: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Result<bool, EngineError> {
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
            labels: Some(
                names::owner_labels(project)
                    .into_iter()
                    .chain([(LABEL_VOLUME.to_string(), name.to_string())])
                    .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect(),
            ),
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
        let what = format!("listing the volumes of `{project}`");
        let list = self
            .volumes_labelled(vec![format!("{LABEL_PROJECT}={project}")], &what)
            .await?;
        let mut names: Vec<String> = list
            .into_iter()
            .filter(|v| v.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project))
            .map(|v| v.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// When volume `full_name` was made (seconds since the epoch); `None`
    /// when it does not exist or the engine does not say.
    pub async fn volume_created(&self, full_name: &str) -> Result<Option<i64>, EngineError> {
        let info = self.volume_info(full_name).await?;
        Ok(info.and_then(|v| parse_rfc3339(&v.created)))
    }

    /// Copies directory `dir` of container `from` (stopped) into the volumes
    /// of a container made from `helper` (created for this, never started,
    /// removed after), owners and modes kept: the engine's archive API packs
    /// them into the tar and unpacks them as they are. Streamed, so a large
    /// data directory never sits in memory. False when `from` has nothing at `dir`.
    pub async fn move_data(
        &self,
        from: &str,
        helper: &ContainerSpec,
        dir: &str,
    ) -> Result<bool, EngineError> {
        let dir = dir.trim_end_matches('/');
        let what = || format!("moving {dir} of `{from}` into `{}`", helper.name);
        let Some((id, parent)) = self.archive_helper(from, helper, dir, &what).await? else {
            return Ok(false);
        };
        let tar = self
            .docker
            .download_from_container(
                from,
                Some(DownloadFromContainerOptions {
                    path: dir.to_string(),
                }),
            )
            .map_err(std::io::Error::other);
        let result = self
            .docker
            .upload_to_container(
                &id,
                Some(UploadToContainerOptions {
                    path: parent,
                    ..Default::default()
                }),
                bollard::body_try_stream(tar),
            )
            .await
            .map(|()| true)
            .map_err(|e| EngineError::api(what(), e));
        // Only the helper's own scratch volumes go; the named one stays.
        let removed = self.remove_with_volumes(&id).await;
        let moved = result?;
        removed?;
        Ok(moved)
    }

    /// The start of a copy of `dir` (no trailing `/`) of container `from`
    /// through the archive API: `None` when `from` has nothing at `dir`,
    /// else the created helper's id and the directory to unpack the tar in
    /// (the tar holds `<basename>/...`, so it is unpacked in the parent: the
    /// directory entry itself gives the volume's root its owner and mode).
    pub(super) async fn archive_helper(
        &self,
        from: &str,
        helper: &ContainerSpec,
        dir: &str,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<Option<(String, String)>, EngineError> {
        match self
            .docker
            .get_container_archive_info(
                from,
                Some(ContainerArchiveInfoOptions {
                    path: dir.to_string(),
                }),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(EngineError::api(what(), e)),
        }
        let id = self.create(helper).await?;
        let parent = match dir.rsplit_once('/') {
            Some((p, _)) if !p.is_empty() => p.to_string(),
            _ => "/".to_string(),
        };
        Ok(Some((id, parent)))
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

#[cfg(test)]
mod gateway_tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig};

    fn network(configs: Vec<IpamConfig>) -> Option<Ipam> {
        Some(Ipam {
            config: Some(configs),
            ..Default::default()
        })
    }

    #[test]
    fn the_gateway_is_the_named_one_else_the_subnets_first_address() {
        let named = network(vec![IpamConfig {
            subnet: Some("172.18.0.0/16".into()),
            gateway: Some("172.18.0.254".into()),
            ..Default::default()
        }]);
        assert_eq!(
            ipv4_gateway(named.as_ref()),
            Some("172.18.0.254".parse().unwrap())
        );
        let unnamed = network(vec![IpamConfig {
            subnet: Some("172.17.0.0/16".into()),
            ..Default::default()
        }]);
        assert_eq!(
            ipv4_gateway(unnamed.as_ref()),
            Some("172.17.0.1".parse().unwrap())
        );
        let v6_only = network(vec![IpamConfig {
            subnet: Some("fd00::/64".into()),
            gateway: Some("fd00::1".into()),
            ..Default::default()
        }]);
        assert_eq!(ipv4_gateway(v6_only.as_ref()), None);
        assert_eq!(ipv4_gateway(None), None);
    }
}
