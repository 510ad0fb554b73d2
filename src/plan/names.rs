//! How devstack names and labels what it creates, so a later run finds it again.
//!
//! Labels, not names, decide ownership: `down` and `up` only ever touch
//! objects whose `dev.devstack.project` label is the project, so a stranger's
//! container called `shop-web-1` is never adopted or removed.

use serde::{Deserialize, Serialize};

/// The name of a project (one copy of a stack): the stack's `name`, or
/// `-p`/`DEVSTACK_PROJECT_NAME`. It ends up in container, network and volume
/// names and in the path of the project's state directory, so it can only be
/// made by the name check (`spec::decode::check_name`: lowercase letters,
/// digits, `-` and `_`): no `/`, no `..`, nothing a path could climb out with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

/// A project name the name check refused; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidProjectName(String);

impl ProjectName {
    /// The name, if it passes the check.
    pub fn new(name: &str) -> Result<ProjectName, InvalidProjectName> {
        crate::spec::decode::check_name(name).map_err(InvalidProjectName)?;
        Ok(ProjectName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ProjectName {
    type Err = InvalidProjectName;

    fn from_str(name: &str) -> Result<ProjectName, InvalidProjectName> {
        ProjectName::new(name)
    }
}

impl TryFrom<String> for ProjectName {
    type Error = InvalidProjectName;

    fn try_from(name: String) -> Result<ProjectName, InvalidProjectName> {
        ProjectName::new(&name)
    }
}

impl From<ProjectName> for String {
    fn from(name: ProjectName) -> String {
        name.0
    }
}

/// Read as the plain name wherever a `&str` is taken (Docker names, labels).
impl std::ops::Deref for ProjectName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The project (one copy of a stack) an object belongs to.
pub const LABEL_PROJECT: &str = "dev.devstack.project";
/// The service or datastore a container runs.
pub const LABEL_SERVICE: &str = "dev.devstack.service";
/// The 1-based replica index of a container within its unit.
pub const LABEL_REPLICA: &str = "dev.devstack.replica";
/// The hash of the container's effective configuration and image id.
pub const LABEL_HASH: &str = "dev.devstack.config-hash";
/// `service` or `datastore`.
pub const LABEL_KIND: &str = "dev.devstack.kind";
/// Set instead of the service label on one-off task containers.
pub const LABEL_TASK: &str = "dev.devstack.task";
/// The named volume's name within the stack (without the project prefix).
pub const LABEL_VOLUME: &str = "dev.devstack.volume";
/// On a datastore's data volume created for a stack with seed data: `wanted`.
pub const LABEL_SEED: &str = "dev.devstack.seed";
/// On a seeded marker volume: the creation time of the data volume it vouches for.
pub const LABEL_SEEDED: &str = "dev.devstack.seeded";

/// The marker volume that says data volume `volume` (its name in the stack)
/// holds its seed: `<volume>-seeded`.
pub fn seeded_marker(volume: &str) -> String {
    format!("{volume}-seeded")
}

/// The version of the meaning of devstack's labels and state files. An
/// object without [`LABEL_SCHEMA`] was made by a release before labels had
/// one (schema 0), and is adopted as it is; one with a higher number than
/// this was made by a newer devstack, whose labels this one may misread, and
/// is refused.
pub const SCHEMA: u32 = 1;
/// [`SCHEMA`] as the object's maker knew it.
pub const LABEL_SCHEMA: &str = "dev.devstack.schema";
/// The devstack release that made the object (for people reading `docker inspect`).
pub const LABEL_VERSION: &str = "dev.devstack.version";

/// The labels every object devstack makes carries: its project, the schema
/// of its labels and the release that made it.
pub fn owner_labels(project: &str) -> [(String, String); 3] {
    [
        (LABEL_PROJECT.to_string(), project.to_string()),
        (LABEL_SCHEMA.to_string(), SCHEMA.to_string()),
        (
            LABEL_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]
}

/// The schema an object's labels say it was made with: 0 without the
/// label (an older release); `None` when the label is not a number.
pub fn schema_of<'a>(label: impl Into<Option<&'a String>>) -> Option<u32> {
    match label.into() {
        None => Some(0),
        Some(s) => s.parse().ok(),
    }
}

/// `<project>-<service>-<replica>`, as Compose names them.
pub fn container_name(project: &str, service: &str, replica: u32) -> String {
    format!("{project}-{service}-{replica}")
}

/// The stack's network is named after the project.
pub fn network_name(project: &str) -> String {
    project.to_string()
}

/// `<project>_<name>`, as Compose names volumes.
pub fn volume_name(project: &str, name: &str) -> String {
    format!("{project}_{name}")
}

/// The volume (within the stack) that holds a datastore's data when the
/// stack names none: `<datastore>-data`, so `<project>_<datastore>-data`
/// on the engine, found again by every later `up` of the project.
pub fn data_volume(datastore: &str) -> String {
    format!("{datastore}-data")
}

/// The reference of an image built for a unit that names no image of its own:
/// `devstack-built:<project>.<service>`. Names hold `-` and `_`, so joining
/// them with either made `a-b`+`c` and `a`+`b-c` one image; they never hold
/// `.`, and a tag (unlike a repository path) takes every name as it is.
/// Image references must be lowercase, so the parts are lowercased.
pub fn built_image_tag(project: &str, service: &str) -> String {
    format!(
        "devstack-built:{}.{}",
        project.to_ascii_lowercase(),
        service.to_ascii_lowercase()
    )
}

/// The name of a one-off task container. The suffix keeps two runs of the
/// same task (say, two terminals) from colliding.
pub fn task_container_name(project: &str, task: &str, suffix: &str) -> String {
    format!("{project}-{task}-run-{suffix}")
}

/// The process that made a one-off task container, when its name carries
/// one (devstack uses its own process id as the suffix).
pub fn task_container_owner(name: &str) -> Option<u32> {
    name.rsplit_once("-run-")?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 10): project `a-b` with service `c` and project `a`
    /// with service `b-c` were both `a-b-c:devstack`.
    #[test]
    fn built_image_tags_of_two_projects_never_meet() {
        assert_ne!(built_image_tag("a-b", "c"), built_image_tag("a", "b-c"));
        assert_ne!(built_image_tag("a_b", "c"), built_image_tag("a", "b_c"));
        // Every valid name, even one Docker's repository grammar refuses
        // (a trailing `-`, `___`), makes a valid reference.
        for (project, service) in [("shop", "web"), ("x-", "y___z"), ("a", "b-")] {
            let tag = built_image_tag(project, service);
            crate::spec::units::check_image_ref(&tag).unwrap_or_else(|e| panic!("{tag}: {e}"));
        }
        let longest = "a".repeat(63);
        let tag = built_image_tag(&longest, &longest);
        crate::spec::units::check_image_ref(&tag).unwrap_or_else(|e| panic!("{tag}: {e}"));
    }

    #[test]
    fn a_project_name_is_only_made_by_the_name_check() {
        for bad in [
            "", "..", "../..", "/abs", "a/b", ".", "Shop", "-x", "a b", "a\nb",
        ] {
            assert!(ProjectName::new(bad).is_err(), "{bad:?} was accepted");
            assert!(bad.parse::<ProjectName>().is_err(), "{bad:?} parsed");
            assert!(
                serde_json::from_value::<ProjectName>(serde_json::json!(bad)).is_err(),
                "{bad:?} deserialized"
            );
        }
        let name = ProjectName::new("ci-job_17").expect("a valid name");
        assert_eq!(name.as_str(), "ci-job_17");
        assert_eq!(
            serde_json::to_value(&name).unwrap(),
            serde_json::json!("ci-job_17")
        );
    }

    #[test]
    fn a_task_containers_owner_is_read_back_from_its_name() {
        let name = task_container_name("shop", "migrate", "4242");
        assert_eq!(task_container_owner(&name), Some(4242));
        assert_eq!(task_container_owner("shop-migrate-run-x"), None);
        assert_eq!(task_container_owner("shop-web-1"), None);
    }

    #[test]
    fn schema_labels_tell_older_current_and_unreadable_apart() {
        let labels: std::collections::BTreeMap<_, _> = owner_labels("shop").into();
        assert_eq!(labels[LABEL_PROJECT], "shop");
        assert_eq!(schema_of(labels.get(LABEL_SCHEMA)), Some(SCHEMA));
        assert_eq!(schema_of(None), Some(0), "no label: an older release");
        assert_eq!(schema_of(&"7".to_string()), Some(7));
        assert_eq!(schema_of(&"one".to_string()), None);
    }
}
