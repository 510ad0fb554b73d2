//! The volume rules that keep data when containers come and go: every
//! datastore's data lives in a named volume (the stack's, or a default one),
//! a replacement container mounts the anonymous volumes of the one it
//! replaces (as Compose does), and data an older devstack left in a
//! datastore container's anonymous volume moves into the named one.

use std::borrow::Cow;

use super::names;
use super::spec::{ContainerSpec, MountSource, MountSpec};
use crate::spec::{Container, Stack, Volume, VolumeSource};

/// A unit as its containers run it: the stack's settings, plus, for a
/// datastore that mounts nothing at its kind's data directory, the named
/// volume `<datastore>-data` there, so its data outlives its containers
/// (an image's `VOLUME` alone would give an anonymous volume, which goes
/// with the container).
///
/// A datastore without a `health` gets its kind's readiness check
/// (`datastore::kinds::readiness`), which is no part of the config hash.
pub fn effective_unit<'a>(stack: &'a Stack, unit: &str) -> Option<Cow<'a, Container>> {
    let container = stack.unit(unit)?;
    let readiness = stack
        .datastores
        .get(unit)
        .filter(|d| d.container.health.is_none())
        .and_then(|d| crate::datastore::kinds::readiness(d.kind));
    let volume = default_data_volume(stack, unit);
    if volume.is_none() && readiness.is_none() {
        return Some(Cow::Borrowed(container));
    }
    let mut c = container.clone();
    c.volumes.extend(volume);
    if readiness.is_some() {
        c.health = readiness;
    }
    Some(Cow::Owned(c))
}

/// The default data volume of datastore `unit`, when it needs one: the stack
/// names none, its kind has a data directory, and none of its own volumes
/// is mounted there.
fn default_data_volume(stack: &Stack, unit: &str) -> Option<Volume> {
    let ds = stack.datastores.get(unit)?;
    if ds.data_volume.is_some() {
        return None;
    }
    let target = ds.kind.data_dir()?;
    if ds
        .container
        .volumes
        .iter()
        .any(|v| same_path(&v.target, target))
    {
        return None;
    }
    Some(Volume {
        source: VolumeSource::Named(names::data_volume(unit)),
        target: target.to_string(),
        read_only: false,
    })
}

/// The named volume holding datastore `unit`'s data (its name within the
/// stack) and where it is mounted; `None` for services and for a datastore
/// whose data directory is unknown or a host path.
pub fn data_volume(stack: &Stack, unit: &str) -> Option<(String, String)> {
    let ds = stack.datastores.get(unit)?;
    match &ds.data_volume {
        Some(name) => ds
            .container
            .volumes
            .iter()
            .find(|v| matches!(&v.source, VolumeSource::Named(n) if n == name))
            .map(|v| (name.clone(), v.target.clone())),
        None => default_data_volume(stack, unit).and_then(|v| match v.source {
            VolumeSource::Named(n) => Some((n, v.target)),
            VolumeSource::Bind(_) => None,
        }),
    }
}

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

/// `/data` and `/data/` are the same mount point.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::unit;
    use crate::spec::{Datastore, DatastoreKind, UnitKind};

    fn stack_with(ds: Datastore) -> Stack {
        let mut stack = crate::plan::testing::stack_of(Vec::new());
        stack.datastores.insert("db".into(), ds);
        stack
    }

    fn datastore(
        kind: DatastoreKind,
        volumes: Vec<Volume>,
        data_volume: Option<&str>,
    ) -> Datastore {
        let mut container = unit("pg").build();
        container.volumes = volumes;
        Datastore {
            container,
            kind,
            data_volume: data_volume.map(str::to_string),
            seed: None,
        }
    }

    fn named(name: &str, target: &str) -> Volume {
        Volume {
            source: VolumeSource::Named(name.into()),
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn a_datastore_without_a_volume_gets_a_named_one_at_its_data_dir() {
        let stack = stack_with(datastore(DatastoreKind::Postgres, Vec::new(), None));
        let c = effective_unit(&stack, "db").unwrap();
        assert_eq!(
            c.volumes,
            vec![named("db-data", "/var/lib/postgresql/data")]
        );
        assert_eq!(
            data_volume(&stack, "db"),
            Some(("db-data".into(), "/var/lib/postgresql/data".into()))
        );
    }

    #[test]
    fn the_stacks_own_volume_wins_and_no_default_is_added() {
        let own = named("pg", "/var/lib/postgresql/data");
        let stack = stack_with(datastore(
            DatastoreKind::Postgres,
            vec![own.clone()],
            Some("pg"),
        ));
        assert_eq!(effective_unit(&stack, "db").unwrap().volumes, vec![own]);
        assert_eq!(
            data_volume(&stack, "db"),
            Some(("pg".into(), "/var/lib/postgresql/data".into()))
        );
        // A mount at the data directory through `volumes:` counts as the stack's own.
        let bind = Volume {
            source: VolumeSource::Bind("/srv/pg".into()),
            target: "/var/lib/postgresql/data/".into(),
            read_only: false,
        };
        let stack = stack_with(datastore(DatastoreKind::Postgres, vec![bind.clone()], None));
        assert_eq!(effective_unit(&stack, "db").unwrap().volumes, vec![bind]);
        assert_eq!(data_volume(&stack, "db"), None);
    }

    #[test]
    fn a_generic_datastore_and_a_service_get_nothing() {
        let stack = stack_with(datastore(DatastoreKind::Generic, Vec::new(), None));
        assert!(effective_unit(&stack, "db").unwrap().volumes.is_empty());
        assert_eq!(data_volume(&stack, "db"), None);
        let stack = crate::plan::testing::stack_of(vec![("web", unit("app:1"))]);
        assert!(effective_unit(&stack, "web").unwrap().volumes.is_empty());
        assert_eq!(data_volume(&stack, "web"), None);
    }

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
