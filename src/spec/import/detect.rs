//! Which format a parsed file is in, from content markers alone.
//!
//! Invariant: a file is Compose or Kubernetes only when its markers are
//! unambiguous; anything else is devstack's, so a devstack stack file (or a
//! broken one) keeps today's behaviour and today's errors.

use super::tree::{entries, scalar};
use crate::spec::yaml::{Node, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Devstack,
    Compose,
    Kubernetes,
    /// systemd units run by fleet (detected on the text: see `fleet::is_unit`).
    Fleet,
}

/// Top-level keys only devstack has.
const DEVSTACK_TOP: &[&str] = &["datastores", "tasks", "discovery", "proxy"];
/// Service keys only devstack has (Compose would refuse them).
const DEVSTACK_SERVICE: &[&str] = &[
    "env",
    "health",
    "port",
    "routes",
    "watch",
    "stop_grace",
    "allow_host_access",
    "replicas",
    "resources",
    "kind",
    "volume",
    "seed",
];
/// Top-level keys only Compose has.
const COMPOSE_TOP: &[&str] = &[
    "networks", "volumes", "configs", "secrets", "version", "include",
];
/// Service keys only Compose has.
const COMPOSE_SERVICE: &[&str] = &[
    "environment",
    "healthcheck",
    "deploy",
    "develop",
    "networks",
    "expose",
    "container_name",
    "profiles",
    "stop_grace_period",
    "hostname",
    "extra_hosts",
    "logging",
    "cap_add",
    "cap_drop",
    "working_dir",
    "user",
    "tty",
    "stdin_open",
    "pull_policy",
    "secrets",
    "configs",
    "ulimits",
    "mem_limit",
    "cpus",
    "scale",
    "network_mode",
    "privileged",
    "extends",
];

/// The format of one file's documents.
pub fn detect(docs: &[Node]) -> Format {
    if !docs.is_empty() && docs.iter().all(is_kubernetes) {
        return Format::Kubernetes;
    }
    match docs {
        [doc] if is_compose(doc) => Format::Compose,
        _ => Format::Devstack,
    }
}

/// A Kubernetes object: a mapping with scalar `apiVersion` and `kind`, and
/// none of devstack's top-level keys.
pub fn is_kubernetes(doc: &Node) -> bool {
    let has_scalar = |key: &str| doc.get(key).and_then(scalar).is_some();
    has_scalar("apiVersion")
        && has_scalar("kind")
        && !entries(doc)
            .iter()
            .any(|(k, _)| k.name == "services" || DEVSTACK_TOP.contains(&k.name.as_str()))
}

/// A Compose file: `services` whose entries are mappings, no key only
/// devstack knows, and at least one key only Compose knows.
pub fn is_compose(doc: &Node) -> bool {
    let Value::Map(top) = &doc.value else {
        return false;
    };
    if top
        .iter()
        .any(|(k, _)| DEVSTACK_TOP.contains(&k.name.as_str()))
    {
        return false;
    }
    let Some(services) = doc.get("services") else {
        return false;
    };
    let Value::Map(services) = &services.value else {
        return false;
    };
    let mut compose_marker = top
        .iter()
        .any(|(k, _)| COMPOSE_TOP.contains(&k.name.as_str()));
    for (_, service) in services {
        let Value::Map(fields) = &service.value else {
            return false;
        };
        for (key, _) in fields {
            if DEVSTACK_SERVICE.contains(&key.name.as_str()) {
                return false;
            }
            compose_marker |= COMPOSE_SERVICE.contains(&key.name.as_str());
        }
    }
    compose_marker
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::{parse, parse_documents};

    fn format_of(text: &str) -> Format {
        detect(&parse_documents(0, text).unwrap())
    }

    #[test]
    fn every_example_stack_is_devstack() {
        for text in [
            include_str!("../../../stacks/demo/devstack.yaml"),
            include_str!("../../../stacks/events/devstack.yaml"),
            include_str!("../../../stacks/opinions/devstack.yaml"),
            include_str!("../../../stacks/giveaway/devstack.yaml"),
        ] {
            assert_eq!(detect(&[parse(0, text).unwrap()]), Format::Devstack);
        }
    }

    #[test]
    fn ambiguous_files_are_devstack() {
        // Valid in both formats: devstack's, with devstack's errors.
        assert_eq!(
            format_of("services:\n  web:\n    image: nginx\n"),
            Format::Devstack
        );
        // A devstack overlay that only adds a build.
        assert_eq!(
            format_of("services:\n  web:\n    build: ./web\n"),
            Format::Devstack
        );
        // Compose keys beside a devstack-only key: a devstack file with a mistake.
        assert_eq!(
            format_of(
                "services:\n  web:\n    image: x\n    environment: {A: b}\n    health: {tcp: 1}\n"
            ),
            Format::Devstack
        );
        assert_eq!(
            format_of("name: x\nnetworks: {}\nservices: {}\ndatastores: {}\n"),
            Format::Devstack
        );
        // `kind` alone (a datastore-looking mapping) is not Kubernetes.
        assert_eq!(format_of("kind: postgres\nimage: x\n"), Format::Devstack);
        assert_eq!(format_of(""), Format::Devstack);
        assert_eq!(format_of("- a\n- b\n"), Format::Devstack);
    }

    #[test]
    fn compose_and_kubernetes_are_recognised() {
        assert_eq!(
            format_of("services:\n  web:\n    image: nginx\n    environment: [A=b]\n"),
            Format::Compose
        );
        assert_eq!(
            format_of("services:\n  web:\n    image: nginx\nnetworks:\n  default: {}\n"),
            Format::Compose
        );
        assert_eq!(
            format_of("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\n"),
            Format::Kubernetes
        );
        // One document that is not an object makes the stream not Kubernetes.
        assert_eq!(
            format_of("apiVersion: v1\nkind: Service\n---\nname: x\n"),
            Format::Devstack
        );
    }
}
