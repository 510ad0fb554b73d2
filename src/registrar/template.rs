//! A registration's key and value: devstack's layout, or the stack's own
//! templates (`discovery.key` / `discovery.value`, minijinja) so that a
//! production confd template reads dev keys unchanged.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::router::layout::join_key;
use crate::router::Instance;
use crate::spec::Discovery;

/// What a key or value template sees about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub project: String,
    /// The registry prefix, without a trailing `/`.
    pub prefix: String,
    pub service: String,
    /// The full container id.
    pub id: String,
    /// The container name (`<project>-<service>-<replica>`).
    pub name: String,
    pub replica: u32,
    /// The container's address on the stack network.
    pub address: String,
    /// The port traffic goes to.
    pub port: u16,
    pub image: String,
    /// The image tag (`git-abc123` of `api:git-abc123`); `latest` without one.
    pub version: String,
}

/// A template that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("discovery.{field}: {message}")]
pub struct TemplateError {
    /// `key` or `value`.
    pub field: &'static str,
    pub message: String,
}

/// The tag of an image reference: after the last `:` that follows the last
/// `/` (so a registry port is not a tag), before any `@digest`.
pub fn version_of(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_string(),
        _ => "latest".into(),
    }
}

/// The key a container is registered under.
pub fn key_of(discovery: &Discovery, presence: &Presence) -> Result<String, TemplateError> {
    match &discovery.key {
        None => Ok(join_key(&presence.prefix, &presence.service, &presence.id)),
        Some(template) => render("key", template, presence).map(|k| k.trim().to_string()),
    }
}

/// The value registered for a container.
pub fn value_of(discovery: &Discovery, presence: &Presence) -> Result<String, TemplateError> {
    match &discovery.value {
        // The JSON the router's registry reads.
        None => serde_json::to_string(&Instance {
            service: presence.service.clone(),
            id: presence.id.clone(),
            replica: presence.replica,
            address: presence.address.clone(),
            port: presence.port,
            image: presence.image.clone(),
            version: presence.version.clone(),
        })
        .map_err(|e| TemplateError {
            field: "value",
            message: e.to_string(),
        }),
        Some(template) => render("value", template, presence),
    }
}

fn render(
    field: &'static str,
    template: &str,
    presence: &Presence,
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    // A misspelt name is an error, not an empty segment in every key.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let fail = |e: minijinja::Error| TemplateError {
        field,
        message: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.to_string(),
        },
    };
    env.render_str(
        template,
        minijinja::Value::from(minijinja::value::Serde(presence)),
    )
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Etcd;
    use std::time::Duration;

    fn presence() -> Presence {
        Presence {
            project: "shop".into(),
            prefix: "/services".into(),
            service: "api".into(),
            id: "abc123".into(),
            name: "shop-api-2".into(),
            replica: 2,
            address: "172.18.0.3".into(),
            port: 8080,
            image: "registry:5000/team/api:git-1f2e".into(),
            version: "git-1f2e".into(),
        }
    }

    fn discovery(key: Option<&str>, value: Option<&str>) -> Discovery {
        Discovery {
            etcd: Etcd::Embedded,
            prefix: None,
            ttl: Duration::from_secs(30),
            key: key.map(str::to_string),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn default_layout_is_what_the_router_reads() {
        let d = discovery(None, None);
        let key = key_of(&d, &presence()).unwrap();
        assert_eq!(key, "/services/api/abc123");
        let value = value_of(&d, &presence()).unwrap();
        let registry = crate::router::Registry::from_kvs("/services", vec![(key, value)]);
        let api = registry.instances("api");
        assert_eq!(api.len(), 1);
        assert_eq!(
            (api[0].address.as_str(), api[0].port, api[0].replica),
            ("172.18.0.3", 8080, 2)
        );
        assert_eq!(api[0].version, "git-1f2e");
    }

    #[test]
    fn registrator_style_templates() {
        let d = discovery(
            Some("{{ prefix }}/{{ service }}/{{ name }}:{{ port }}"),
            Some("{{ address }}:{{ port }}"),
        );
        assert_eq!(
            key_of(&d, &presence()).unwrap(),
            "/services/api/shop-api-2:8080"
        );
        assert_eq!(value_of(&d, &presence()).unwrap(), "172.18.0.3:8080");
    }

    #[test]
    fn a_misspelt_name_is_an_error() {
        let d = discovery(Some("/s/{{ servic }}"), None);
        let err = key_of(&d, &presence()).unwrap_err();
        assert_eq!(err.field, "key");
        assert!(err.message.contains("undefined"), "{err}");
        let d = discovery(None, Some("{{ address "));
        assert!(value_of(&d, &presence()).is_err());
    }

    #[test]
    fn versions_come_from_tags() {
        assert_eq!(version_of("api:git-1f2e"), "git-1f2e");
        assert_eq!(version_of("registry:5000/team/api"), "latest");
        assert_eq!(version_of("registry:5000/team/api:v2@sha256:00"), "v2");
        assert_eq!(version_of("redis"), "latest");
    }
}
