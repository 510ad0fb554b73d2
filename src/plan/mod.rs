//! Planning: pure functions from the desired stack (and the observed Docker
//! state) to the actions that reconcile them.
//!
//! Nothing here talks to Docker, reads files or looks at the clock, so every
//! decision `up`, `down` and `scale` make can be unit-tested with a stack
//! built in memory.
//!
//! - [`names`]: container, network, volume and image names, and the labels.
//! - [`container`]: [`ContainerSpec`], what one container of a unit should be, and its config hash.
//! - [`graph`]: dependency order, the units a partial `up` needs, tasks that run before a unit.
//! - [`volumes`]: the default data volume of a datastore.
//! - [`replace`]: the volumes and data a replacement container keeps.
//! - [`diff`]: desired versus observed containers, per unit, as [`Action`]s.

pub mod container;
pub mod diff;
pub mod graph;
pub mod names;
pub mod replace;
pub mod volumes;

pub use container::{
    desired_containers, probe_published, task_container, ContainerSpec, MountSource, MountSpec,
};
pub use diff::{plan_orphans, plan_unit, replica_container, Action, Observed, ObservedState};
pub use graph::{dependency_closure, stop_order, tasks_before, PlanError};
pub use replace::{carried_mounts, data_move_helper, moves_data, OldMount};
pub use volumes::{data_volume, effective_unit};

#[cfg(test)]
pub(crate) mod testing;
