//! Desired versus observed containers, as the actions that reconcile them.
//!
//! Level-triggered: the plan depends only on what exists now, never on what a
//! previous run meant to do, so after a crash the next `up` simply finishes.

use std::collections::BTreeSet;

use serde::Serialize;

use super::container::ContainerSpec;

/// A container's state as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
}

/// A container of the project as found on the engine (by its labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub id: String,
    pub name: String,
    /// The unit label; `None` for task containers.
    pub service: Option<String>,
    /// The replica label, when it parses.
    pub replica: Option<u32>,
    pub config_hash: Option<String>,
    /// The task label of a one-off container.
    pub task: Option<String>,
    /// The kind label: `service` or `datastore`.
    pub kind: Option<String>,
    pub state: ObservedState,
    /// Seconds since the epoch.
    pub created: i64,
}

/// What to do about one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Running and up to date: nothing to do but confirm it is healthy.
    Keep {
        id: String,
        spec: Box<ContainerSpec>,
    },
    /// Up to date but not running: start it again (its data and id are kept).
    Start {
        id: String,
        spec: Box<ContainerSpec>,
    },
    /// Nothing exists for this replica.
    Create { spec: Box<ContainerSpec> },
    /// It exists with another configuration: remove it, then create anew.
    Recreate {
        id: String,
        spec: Box<ContainerSpec>,
        reason: String,
    },
    /// It should not exist (a replica beyond the scale, a duplicate, an orphan).
    Remove {
        id: String,
        name: String,
        reason: String,
    },
}

impl Action {
    /// True when the action changes nothing on the engine.
    pub fn is_noop(&self) -> bool {
        matches!(self, Action::Keep { .. })
    }
}

/// The actions for one unit, given its desired containers (all replicas) and
/// the project's observed containers (any unit; others are ignored).
///
/// Per replica index the best match is kept: one with the right name and hash,
/// then one with the right hash. Every other container of the unit is removed,
/// so duplicates left by an interrupted run disappear.
pub fn plan_unit(service: &str, desired: &[ContainerSpec], observed: &[Observed]) -> Vec<Action> {
    let mine: Vec<&Observed> = observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
        .collect();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut actions = Vec::new();

    for spec in desired {
        let candidates: Vec<&&Observed> = mine
            .iter()
            .filter(|o| o.replica == Some(spec.replica) && !used.contains(o.id.as_str()))
            .collect();
        let fits = |o: &&&Observed| o.config_hash.as_deref() == Some(spec.config_hash.as_str());
        let usable =
            |o: &&&Observed| !matches!(o.state, ObservedState::Removing | ObservedState::Dead);
        let best = candidates
            .iter()
            .find(|o| fits(o) && usable(o) && o.name == spec.name)
            .or_else(|| candidates.iter().find(|o| fits(o) && usable(o)))
            .or_else(|| candidates.iter().find(|o| o.name == spec.name))
            .or_else(|| candidates.first());
        match best {
            Some(found) => {
                used.insert(found.id.as_str());
                let spec_box = Box::new(spec.clone());
                let action = if !fits(found) {
                    Action::Recreate {
                        id: found.id.clone(),
                        spec: spec_box,
                        reason: "its configuration changed".into(),
                    }
                } else if !usable(found) {
                    Action::Recreate {
                        id: found.id.clone(),
                        spec: spec_box,
                        reason: format!("it is {:?}", found.state).to_lowercase(),
                    }
                } else if found.name != spec.name && !is_generation_of(&found.name, &spec.name) {
                    // Same config under another name (renamed by hand): replace it
                    // so names stay predictable for `exec` and logs.
                    Action::Recreate {
                        id: found.id.clone(),
                        spec: spec_box,
                        reason: format!("it is named `{}`", found.name),
                    }
                } else if found.state == ObservedState::Running
                    || found.state == ObservedState::Restarting
                {
                    Action::Keep {
                        id: found.id.clone(),
                        spec: spec_box,
                    }
                } else {
                    Action::Start {
                        id: found.id.clone(),
                        spec: spec_box,
                    }
                };
                actions.push(action);
            }
            None => actions.push(Action::Create {
                spec: Box::new(spec.clone()),
            }),
        }
    }

    // Removals go first so a recreated or created container never meets a
    // name (or a fixed host port) still held by one that is on its way out.
    let mut removals: Vec<Action> = mine
        .iter()
        .filter(|o| !used.contains(o.id.as_str()))
        .map(|o| Action::Remove {
            id: o.id.clone(),
            name: o.name.clone(),
            reason: match o.replica {
                Some(r) if r as usize > desired.len() => {
                    format!("replica {r} is beyond the scale of {}", desired.len())
                }
                Some(_) => "it duplicates another container of the replica".into(),
                None => "it has no replica label".into(),
            },
        })
        .collect();
    removals.extend(actions);
    removals
}

/// Whether `name` is `base` with a swap's generation suffix (`-g<millis>`):
/// the new container of a blue-green swap that was cut off before it took
/// the usual name. Kept as it is: the same configuration, already serving.
fn is_generation_of(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("-g"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The container that stands for one replica of a service now, for commands
/// that act on one (`exec`). During a blue-green swap a replica has two: the
/// old one, still running while it drains and stops in the background, and
/// its replacement. The replacement is the one meant: running first, then the
/// newest, then the one with the later swap generation in its name (creation
/// times are whole seconds).
pub fn replica_container<'a>(
    observed: &'a [Observed],
    service: &str,
    replica: u32,
) -> Option<&'a Observed> {
    observed
        .iter()
        .filter(|o| o.task.is_none() && o.service.as_deref() == Some(service))
        .filter(|o| o.replica == Some(replica))
        .max_by_key(|o| {
            (
                o.state == ObservedState::Running,
                o.created,
                generation(&o.name),
            )
        })
}

/// The swap generation in a container's name (`-g<millis>` at its end), 0 for
/// the usual name.
fn generation(name: &str) -> u128 {
    name.rsplit_once("-g")
        .and_then(|(_, digits)| digits.parse().ok())
        .unwrap_or(0)
}

/// Containers of the project whose unit the stack no longer has.
/// Task containers are left alone: their own `run` removes them.
pub fn plan_orphans<'a>(
    units: impl IntoIterator<Item = &'a str>,
    observed: &[Observed],
) -> Vec<Action> {
    let known: BTreeSet<&str> = units.into_iter().collect();
    observed
        .iter()
        .filter(|o| o.task.is_none())
        // The proxy and registry containers belong to the routing path,
        // not to a unit.
        .filter(|o| !matches!(o.kind.as_deref(), Some("proxy" | "registry")))
        .filter(|o| match o.service.as_deref() {
            Some(s) => !known.contains(s),
            None => true,
        })
        .map(|o| Action::Remove {
            id: o.id.clone(),
            name: o.name.clone(),
            reason: match &o.service {
                Some(s) => format!("`{s}` is no longer in the stack"),
                None => "it has no service label".into(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::container::desired_containers;
    use crate::plan::testing::unit;
    use crate::spec::UnitKind;

    fn desired(n: u32, image_id: &str) -> Vec<ContainerSpec> {
        desired_containers(
            "shop",
            "web",
            UnitKind::Service,
            &unit("app").build(),
            "app",
            image_id,
            n,
        )
    }

    fn observed(spec: &ContainerSpec, id: &str, state: ObservedState) -> Observed {
        Observed {
            id: id.into(),
            name: spec.name.clone(),
            service: Some(spec.service.clone()),
            replica: Some(spec.replica),
            config_hash: Some(spec.config_hash.clone()),
            task: None,
            kind: Some("service".into()),
            state,
            created: 0,
        }
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::Keep { .. } => "keep",
                Action::Start { .. } => "start",
                Action::Create { .. } => "create",
                Action::Recreate { .. } => "recreate",
                Action::Remove { .. } => "remove",
            })
            .collect()
    }

    #[test]
    fn nothing_observed_creates_every_replica() {
        assert_eq!(
            kinds(&plan_unit("web", &desired(2, "i1"), &[])),
            vec!["create", "create"]
        );
    }

    #[test]
    fn an_unchanged_running_stack_is_left_alone() {
        let d = desired(2, "i1");
        let o = vec![
            observed(&d[0], "a", ObservedState::Running),
            observed(&d[1], "b", ObservedState::Running),
        ];
        let plan = plan_unit("web", &d, &o);
        assert!(plan.iter().all(Action::is_noop), "{plan:?}");
    }

    #[test]
    fn scaling_to_zero_removes_every_replica() {
        let d = desired(2, "i1");
        let o: Vec<Observed> = d
            .iter()
            .enumerate()
            .map(|(i, s)| observed(s, &format!("c{i}"), ObservedState::Running))
            .collect();
        assert_eq!(kinds(&plan_unit("web", &[], &o)), vec!["remove", "remove"]);
    }

    #[test]
    fn a_swapped_container_under_its_generation_name_is_kept() {
        let d = desired(1, "sha256:a");
        let mut swapped = observed(&d[0], "x", ObservedState::Running);
        swapped.name = format!("{}-g1763800000000", d[0].name);
        assert_eq!(kinds(&plan_unit("web", &d, &[swapped.clone()])), ["keep"]);
        // Anything else after the name is a container renamed by hand.
        swapped.name = format!("{}-old", d[0].name);
        assert_eq!(kinds(&plan_unit("web", &d, &[swapped])), ["recreate"]);
    }

    #[test]
    fn a_stopped_container_is_started_not_recreated() {
        let d = desired(1, "i1");
        let o = vec![observed(&d[0], "a", ObservedState::Exited)];
        assert_eq!(kinds(&plan_unit("web", &d, &o)), vec!["start"]);
    }

    #[test]
    fn a_new_image_recreates() {
        let old = desired(1, "i1");
        let o = vec![observed(&old[0], "a", ObservedState::Running)];
        assert_eq!(
            kinds(&plan_unit("web", &desired(1, "i2"), &o)),
            vec!["recreate"]
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_replicas_first_in_the_plan() {
        let d3 = desired(3, "i1");
        let o: Vec<Observed> = d3
            .iter()
            .enumerate()
            .map(|(i, s)| observed(s, &format!("c{i}"), ObservedState::Running))
            .collect();
        let plan = plan_unit("web", &desired(1, "i1"), &o);
        assert_eq!(kinds(&plan), vec!["remove", "remove", "keep"]);
        assert!(matches!(&plan[0], Action::Remove { reason, .. } if reason.contains("beyond")));
    }

    #[test]
    fn a_duplicate_left_by_a_crash_is_removed_and_the_fitting_one_kept() {
        // kill -9 in the middle of a recreate can leave an old-config container
        // under another name next to the new one.
        let d = desired(1, "i2");
        let mut stale = observed(&desired(1, "i1")[0], "old", ObservedState::Running);
        stale.name = "shop-web-1-old".into();
        let fresh = observed(&d[0], "new", ObservedState::Created);
        let plan = plan_unit("web", &d, &[stale, fresh]);
        assert_eq!(kinds(&plan), vec!["remove", "start"]);
        assert!(matches!(&plan[0], Action::Remove { id, .. } if id == "old"));
    }

    #[test]
    fn orphans_are_units_the_stack_lost_but_never_tasks() {
        let d = desired(1, "i1");
        let mut gone = observed(&d[0], "x", ObservedState::Running);
        gone.service = Some("legacy".into());
        let mut task = observed(&d[0], "t", ObservedState::Running);
        task.service = None;
        task.task = Some("migrate".into());
        let plan = plan_orphans(
            ["web"],
            &[observed(&d[0], "a", ObservedState::Running), gone, task],
        );
        assert_eq!(kinds(&plan), vec!["remove"]);
        assert!(matches!(&plan[0], Action::Remove { id, .. } if id == "x"));
    }

    #[test]
    fn the_routing_paths_containers_are_no_orphans() {
        let web = observed(&desired(1, "img")[0], "w1", ObservedState::Running);
        let of_kind = |id: &str, kind: &str| Observed {
            id: id.into(),
            name: format!("shop-{kind}"),
            service: None,
            replica: None,
            config_hash: None,
            task: None,
            kind: Some(kind.into()),
            state: ObservedState::Running,
            created: 0,
        };
        let found = [
            web,
            of_kind("p", "proxy"),
            of_kind("r", "registry"),
            of_kind("x", "other"),
        ];
        let removed: Vec<String> = plan_orphans(["web"], &found)
            .iter()
            .map(|a| match a {
                Action::Remove { id, .. } => id.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(removed, ["x"]);
    }

    #[test]
    fn a_replica_mid_swap_is_its_replacement_not_the_container_stopping() {
        let d = desired(1, "i1");
        let mut old = observed(&d[0], "old", ObservedState::Running);
        old.created = 100;
        let mut new = observed(&d[0], "new", ObservedState::Running);
        new.created = 200;
        new.name = format!("{}-g1700000000000", d[0].name);
        let both = [old.clone(), new.clone()];
        assert_eq!(replica_container(&both, "web", 1).unwrap().id, "new");
        // Created in the same second: the swap generation decides.
        new.created = 100;
        let same = [new.clone(), old.clone()];
        assert_eq!(replica_container(&same, "web", 1).unwrap().id, "new");
        // A stopped replacement (a swap that failed) is not preferred to
        // the old one still running.
        new.state = ObservedState::Exited;
        new.created = 200;
        let failed = [old, new];
        assert_eq!(replica_container(&failed, "web", 1).unwrap().id, "old");
        assert!(replica_container(&failed, "web", 2).is_none());
        assert!(replica_container(&failed, "db", 1).is_none());
    }
}
