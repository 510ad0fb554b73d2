//! What the registry holds: the instances registered under the stack's prefix,
//! read from etcd key-values in devstack's layout or a production one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layout::split_key;

/// One registered container: where the proxy can reach it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instance {
    pub service: String,
    /// The container id (the last segment of the default key).
    pub id: String,
    /// 1-based replica number; 0 when the layout does not say.
    #[serde(default)]
    pub replica: u32,
    /// IP address on the stack's network.
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub version: String,
}

/// A snapshot of the registry: every instance, by service, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Registry {
    pub services: BTreeMap<String, Vec<Instance>>,
    /// Every key-value under the prefix, for user templates that read keys directly.
    pub kvs: BTreeMap<String, String>,
}

impl Registry {
    /// Builds the snapshot from the key-values under `prefix`, in devstack's
    /// default layout: `<prefix>/<service>/<container-id>` → JSON [`Instance`]
    /// (the layout is [`super::layout`]'s). Keys or values in another layout
    /// are kept in `kvs` only.
    pub fn from_kvs(prefix: &str, kvs: impl IntoIterator<Item = (String, String)>) -> Registry {
        let mut registry = Registry::default();
        for (key, value) in kvs {
            if let Some((service, id)) = split_key(prefix, &key) {
                if let Some(instance) = parse_instance(service, id, &value) {
                    registry
                        .services
                        .entry(instance.service.clone())
                        .or_default()
                        .push(instance);
                }
            }
            registry.kvs.insert(key, value);
        }
        for instances in registry.services.values_mut() {
            instances.sort_by(|a, b| (a.replica, &a.id).cmp(&(b.replica, &b.id)));
        }
        registry
    }

    pub fn instances(&self, service: &str) -> &[Instance] {
        self.services.get(service).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A value is devstack's JSON, or the `host:port` of registrator-style registries.
fn parse_instance(service: &str, id: &str, value: &str) -> Option<Instance> {
    if let Ok(mut instance) = serde_json::from_str::<Instance>(value) {
        if instance.service.is_empty() {
            instance.service = service.to_string();
        }
        if instance.id.is_empty() {
            instance.id = id.to_string();
        }
        return Some(instance);
    }
    let (host, port) = value.trim().rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some(Instance {
        service: service.to_string(),
        id: id.to_string(),
        replica: 0,
        address: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
        image: String::new(),
        version: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_host_port_layouts() {
        let registry = Registry::from_kvs(
            "/services",
            vec![
                (
                    "/services/api/c2".to_string(),
                    r#"{"service":"api","id":"c2","replica":2,"address":"172.18.0.3","port":8080,"image":"api:git-1","version":"git-1"}"#.to_string(),
                ),
                ("/services/api/c1".to_string(), r#"{"service":"api","id":"c1","replica":1,"address":"172.18.0.2","port":8080}"#.to_string()),
                ("/services/web/w1".to_string(), "172.18.0.9:3000".to_string()),
                ("/services/config".to_string(), "not an instance".to_string()),
                ("/elsewhere/x/y".to_string(), "10.0.0.1:1".to_string()),
                // Another copy's default layout below a shared prefix.
                ("/services/b/api/c9".to_string(), "10.0.0.2:1".to_string()),
            ],
        );
        let api = registry.instances("api");
        assert_eq!(api.len(), 2);
        assert_eq!(api[0].id, "c1", "sorted by replica");
        assert_eq!(registry.instances("web")[0].port, 3000);
        assert_eq!(registry.instances("web")[0].address, "172.18.0.9");
        assert!(registry.instances("x").is_empty());
        assert!(registry.instances("b").is_empty(), "not an instance of `b`");
        assert_eq!(registry.kvs.len(), 6);
    }
}
