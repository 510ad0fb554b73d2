//! How devstack names and labels what it creates, so a later run finds it again.
//!
//! Labels, not names, decide ownership: `down` and `up` only ever touch
//! objects whose `dev.devstack.project` label is the project, so a stranger's
//! container called `shop-web-1` is never adopted or removed.

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

/// The tag of an image built for a unit that names no image of its own.
/// Image names must be lowercase, so the parts are lowercased.
pub fn built_image_tag(project: &str, service: &str) -> String {
    format!(
        "{}-{}:devstack",
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

    #[test]
    fn a_task_containers_owner_is_read_back_from_its_name() {
        let name = task_container_name("shop", "migrate", "4242");
        assert_eq!(task_container_owner(&name), Some(4242));
        assert_eq!(task_container_owner("shop-migrate-run-x"), None);
        assert_eq!(task_container_owner("shop-web-1"), None);
    }
}
