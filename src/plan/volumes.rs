//! The data volume rule: every datastore's data lives in a named volume
//! (the stack's, or a default one). What a replacement container keeps of
//! the one it replaces is `replace.rs`.

use std::borrow::Cow;

use super::names;
use crate::spec::{Container, Stack, Volume, VolumeSource};

/// A unit as its containers run it: the stack's settings, plus, for a
/// datastore that mounts nothing at its kind's data directory, the named
/// volume `<datastore>-data` there, so its data outlives its containers
/// (an image's `VOLUME` alone would give an anonymous volume, which goes
/// with the container).
///
/// A datastore without a `health` gets its kind's readiness check
/// (`spec::kinds::readiness`), which is no part of the config hash.
pub fn effective_unit<'a>(stack: &'a Stack, unit: &str) -> Option<Cow<'a, Container>> {
    let container = stack.unit(unit)?;
    let readiness = stack
        .datastores
        .get(unit)
        .filter(|d| d.container.health.is_none())
        .and_then(|d| crate::spec::kinds::readiness(d.kind));
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

/// `/data` and `/data/` are the same mount point.
pub(super) fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::plan::testing::unit;
    use crate::spec::{Datastore, DatastoreKind};

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

    pub(in crate::plan) fn named(name: &str, target: &str) -> Volume {
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
}
