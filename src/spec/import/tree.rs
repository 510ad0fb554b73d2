//! Small helpers to read a source tree and build a devstack tree, keeping
//! the source positions on every node built.

use super::report::Note;
use crate::spec::yaml::{Key, Node, Span, Value};

/// A scalar with the given text, placed at `span` in the source.
pub fn text(value: impl Into<String>, span: Span) -> Node {
    Node {
        value: Value::Scalar {
            text: value.into(),
            quoted: true,
        },
        span,
    }
}

/// A list of strings, each at `span`.
pub fn texts(values: &[String], span: Span) -> Node {
    Node {
        value: Value::Seq(values.iter().map(|v| text(v.clone(), span)).collect()),
        span,
    }
}

/// A mapping being built, in insertion order.
#[derive(Debug, Clone)]
pub struct MapBuilder {
    entries: Vec<(Key, Node)>,
    span: Span,
}

impl MapBuilder {
    pub fn new(span: Span) -> Self {
        MapBuilder {
            entries: Vec::new(),
            span,
        }
    }

    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, node: Node) {
        let entry = (
            Key {
                name: key.to_string(),
                span: node.span,
            },
            node,
        );
        match self.entries.iter().position(|(k, _)| k.name == key) {
            Some(i) => self.entries[i] = entry,
            None => self.entries.push(entry),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A unit's fields in the order a person writes them (for `import`).
    pub fn build_unit(mut self) -> Node {
        const ORDER: &[&str] = &[
            "kind",
            "image",
            "build",
            "command",
            "entrypoint",
            "env_file",
            "env",
            "port",
            "ports",
            "replicas",
            "depends_on",
            "health",
            "resources",
            "volume",
            "volumes",
            "seed",
            "labels",
            "restart",
            "stop_grace",
            "init",
            "routes",
            "watch",
        ];
        let rank = |name: &str| ORDER.iter().position(|k| *k == name).unwrap_or(ORDER.len());
        self.entries.sort_by_key(|(k, _)| rank(&k.name));
        self.build()
    }

    pub fn build(self) -> Node {
        Node {
            value: Value::Map(self.entries),
            span: self.span,
        }
    }
}

/// The text of a scalar (numbers and booleans included).
pub fn scalar(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// The entries of a mapping (none for anything else).
pub fn entries(node: &Node) -> &[(Key, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        _ => &[],
    }
}

/// The items of a list (none for anything else).
pub fn items(node: &Node) -> &[Node] {
    match &node.value {
        Value::Seq(items) => items,
        _ => &[],
    }
}

/// The limits under a `resources` node (its `limits` map), each with its
/// name and path; any other key under it (reservations, requests) is noted
/// as ignored with `why`.
pub fn resource_limits<'a>(
    resources: &'a Node,
    path: &str,
    why: &str,
    notes: &mut Vec<Note>,
) -> Vec<(&'a str, &'a Node, String)> {
    let mut limits = Vec::new();
    for (k, v) in entries(resources) {
        let rp = child(path, &k.name);
        if k.name != "limits" {
            notes.push(Note::ignored(v.span, rp, why));
            continue;
        }
        for (lk, lv) in entries(v) {
            limits.push((lk.name.as_str(), lv, child(&rp, &lk.name)));
        }
    }
    limits
}

/// A child path: `a.b` or `b` at the root.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An indexed path: `a[0]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A scalar or list of scalars as argv; strings stay one word (the caller
/// decides about shell splitting).
pub fn words(node: &Node) -> Option<Vec<String>> {
    match &node.value {
        Value::Scalar { text, .. } => Some(vec![text.clone()]),
        Value::Seq(items) => items
            .iter()
            .map(|i| scalar(i).map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Memory in the units Kubernetes writes (`512Mi`, `1G`, `1e9`) as a size
/// devstack reads (`512m`, bytes for the decimal suffixes).
pub fn k8s_quantity_bytes(text: &str) -> Option<String> {
    let t = text.trim();
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g"), ("Ti", "t")] {
        if let Some(n) = t.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|_| format!("{n}{unit}"));
        }
    }
    for (suffix, mul) in [("k", 1e3), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)] {
        if let Some(n) = t.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .ok()
                .map(|v| format!("{}", (v * mul) as u64));
        }
    }
    t.parse::<f64>().ok().map(|v| format!("{}", v as u64))
}

/// CPU in Kubernetes units (`500m`, `2`, `0.5`) as cores.
pub fn k8s_cpus(text: &str) -> Option<String> {
    let t = text.trim();
    if let Some(m) = t.strip_suffix('m') {
        let milli: f64 = m.parse().ok()?;
        return Some(format!("{}", milli / 1000.0));
    }
    t.parse::<f64>().ok().map(|v| format!("{v}"))
}

/// Seconds (Kubernetes probe fields) as a devstack duration.
pub fn seconds(text: &str) -> Option<String> {
    text.trim().parse::<u64>().ok().map(|s| format!("{s}s"))
}

/// What a well-known image is, as a datastore kind: the last path
/// component of the repository (`bitnami/kafka:3.6` is `kafka`).
pub fn datastore_kind(image: &str) -> Option<&'static str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repo = last.split(':').next().unwrap_or(last);
    Some(match repo {
        "postgres" | "postgresql" | "postgis" => "postgres",
        "mysql" | "mysql-server" => "mysql",
        "mariadb" => "mariadb",
        "redis" | "redis-stack-server" | "valkey" => "redis",
        "mongo" | "mongodb" | "mongodb-community-server" => "mongodb",
        "elasticsearch" | "opensearch" => "elasticsearch",
        "kafka" | "cp-kafka" => "kafka",
        "etcd" => "etcd",
        // Stateful infrastructure devstack has no kind for: still a
        // datastore (not registered, not routed), of the generic kind.
        "memcached" | "rabbitmq" | "nats" | "zookeeper" | "cp-zookeeper" => "generic",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_devstack_sizes_and_cores() {
        assert_eq!(k8s_quantity_bytes("512Mi").as_deref(), Some("512m"));
        assert_eq!(k8s_quantity_bytes("1Gi").as_deref(), Some("1g"));
        assert_eq!(k8s_quantity_bytes("1G").as_deref(), Some("1000000000"));
        assert_eq!(k8s_quantity_bytes("lots"), None);
        assert_eq!(k8s_cpus("500m").as_deref(), Some("0.5"));
        assert_eq!(k8s_cpus("2").as_deref(), Some("2"));
        assert_eq!(k8s_cpus("x"), None);
    }

    #[test]
    fn well_known_images_are_datastores() {
        assert_eq!(datastore_kind("mongo:4.4.29"), Some("mongodb"));
        assert_eq!(datastore_kind("bitnami/kafka:3.6.1"), Some("kafka"));
        assert_eq!(
            datastore_kind("docker.elastic.co/elasticsearch/elasticsearch:7.17.18"),
            Some("elasticsearch")
        );
        assert_eq!(
            datastore_kind("registry:5000/postgres@sha256:ab"),
            Some("postgres")
        );
        assert_eq!(datastore_kind("opinions/web:git-3f2a9c1"), None);
    }
}
