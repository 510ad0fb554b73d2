//! What a replacement container keeps of the one it replaces: it mounts
//! the anonymous volumes of the old one again (as Compose does), and data an
//! older devstack left in a datastore container's anonymous volume moves into
//! the named data volume (`volumes.rs`).

use super::container::{ContainerSpec, MountSource, MountSpec};
use super::names;
use super::volumes::same_path;

/// One mount of a container being replaced, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldMount {
    /// The volume's name; `None` for a bind mount.
    pub volume: Option<String>,
    /// True for a volume the engine made for the container itself (from an
    /// image's `VOLUME`), which has no name of the stack's.
    pub anonymous: bool,
    pub target: String,
    pub read_only: bool,
}

/// The anonymous volumes of the container `new` replaces that `new` mounts
/// again, by name and at the same place (Compose's rule): those at a path
/// its image declares a `VOLUME` for and its own mounts leave free. Without
/// them the engine would give the replacement empty new volumes there.
pub fn carried_mounts(
    new: &ContainerSpec,
    image_volumes: &[String],
    old: &[OldMount],
) -> Vec<MountSpec> {
    old.iter()
        .filter(|m| m.anonymous)
        .filter(|m| image_volumes.iter().any(|v| same_path(v, &m.target)))
        .filter(|m| !new.mounts.iter().any(|n| same_path(&n.target, &m.target)))
        .filter_map(|m| {
            Some(MountSpec {
                source: MountSource::Volume(m.volume.clone()?),
                target: m.target.clone(),
                read_only: m.read_only,
            })
        })
        .collect()
}

/// Whether a datastore container being replaced holds data that belongs in
/// the named data volume `new` now mounts at `data_dir` (`full_name`): true
/// when the old container kept that directory in an anonymous volume or in
/// its own layer (an older devstack gave datastores no named volume) and the
/// named volume is not older than the old container (so it was made for
/// this move, and never held data of its own). Read from what exists, so an
/// `up` killed during the move does it again.
pub fn moves_data(
    full_name: &str,
    data_dir: &str,
    volume_created: i64,
    old_created: i64,
    old: &[OldMount],
) -> bool {
    let at_data_dir = old.iter().find(|m| same_path(&m.target, data_dir));
    let unnamed = match at_data_dir {
        None => true,
        Some(m) => m.anonymous && m.volume.as_deref() != Some(full_name),
    };
    unnamed && volume_created >= old_created
}

/// The container that receives moved data ([`moves_data`]): the new
/// container `new` as a one-off (named and labelled as a task of this
/// process, so a later `up` removes it if this one is killed), mounting only
/// the named volume `full_name`, never started.
pub fn data_move_helper(
    new: &ContainerSpec,
    project: &str,
    full_name: &str,
    suffix: &str,
) -> ContainerSpec {
    let task = format!("{}-data-move", new.service);
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(names::LABEL_PROJECT.to_string(), project.to_string());
    labels.insert(names::LABEL_TASK.to_string(), task.clone());
    ContainerSpec {
        name: names::task_container_name(project, &task, suffix),
        mounts: new
            .mounts
            .iter()
            .filter(|m| m.source == MountSource::Volume(full_name.to_string()))
            .cloned()
            .collect(),
        ports: Vec::new(),
        aliases: Vec::new(),
        labels,
        health: None,
        config_hash: String::new(),
        ..new.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::unit;
    use crate::plan::volumes::tests::named;
    use crate::spec::UnitKind;

    fn old(volume: Option<&str>, anonymous: bool, target: &str) -> OldMount {
        OldMount {
            volume: volume.map(str::to_string),
            anonymous,
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn anonymous_volumes_at_the_images_volume_paths_are_carried_over() {
        let mut c = unit("app:1").build();
        c.volumes = vec![named("uploads", "/uploads")];
        let spec = &crate::plan::desired_containers(
            "shop",
            "web",
            UnitKind::Service,
            &c,
            "app:1",
            "sha256:1",
            1,
        )[0];
        let image = vec!["/cache".to_string(), "/uploads".to_string()];
        let mounts = [
            old(Some("abc"), true, "/cache/"),
            // The spec mounts its own volume here.
            old(Some("def"), true, "/uploads"),
            // Not a VOLUME of the new image.
            old(Some("ghi"), true, "/gone"),
            // Named volumes and binds come from the spec, not from the old container.
            old(Some("shop_x"), false, "/cache"),
            old(None, false, "/cache"),
        ];
        assert_eq!(
            carried_mounts(spec, &image, &mounts),
            vec![MountSpec {
                source: MountSource::Volume("abc".into()),
                target: "/cache/".into(),
                read_only: false,
            }]
        );
    }

    #[test]
    fn data_moves_from_an_anonymous_volume_or_the_layer_into_a_newer_named_volume() {
        let dir = "/data";
        let full = "shop_db-data";
        let anon = [old(Some("0123abcd"), true, dir)];
        assert!(moves_data(full, dir, 200, 100, &anon));
        assert!(moves_data(full, dir, 100, 100, &anon), "same second");
        assert!(moves_data(full, dir, 200, 100, &[]), "data in the layer");
        assert!(
            !moves_data(full, dir, 50, 100, &anon),
            "a volume older than the container has data of its own"
        );
        assert!(
            !moves_data(full, dir, 200, 100, &[old(Some(full), false, dir)]),
            "already the named volume"
        );
        assert!(
            !moves_data(full, dir, 200, 100, &[old(Some("shop_other"), false, dir)]),
            "another named volume stays where it is"
        );
        assert!(
            !moves_data(full, dir, 200, 100, &[old(None, false, dir)]),
            "a host directory stays where it is"
        );
    }
}
