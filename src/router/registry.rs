//! What the registry holds: the instances registered under the stack's prefix,
//! read from etcd key-values in devstack's layout or a production one.
//!
//! The registry is written by anyone on the stack network (`etcd:2379` is
//! reachable from every container, as in production), so nothing read here is
//! trusted: an instance is used only when its address is an IP address or a
//! DNS name and its port a number from 1 to 65535, and its other fields are
//! single tokens; a key or value holding a control character (a newline could
//! start a new line of HAProxy configuration) is not even kept for templates.
//! What is left out is listed in [`Registry::skipped`], naming the key.

use crate::engine::runtime::{is_address, is_token};
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

/// A key under the prefix that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Skipped {
    /// The key as etcd holds it (print it with `{:?}`: it may hold anything).
    pub key: String,
    pub reason: String,
}

/// A snapshot of the registry: every instance, by service, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Registry {
    pub services: BTreeMap<String, Vec<Instance>>,
    /// Every key-value under the prefix, for user templates that read keys
    /// directly; none holds a control character.
    pub kvs: BTreeMap<String, String>,
    /// Keys left out: values that looked like an instance but failed the
    /// checks, and keys or values holding control characters.
    pub skipped: Vec<Skipped>,
}

impl Registry {
    /// Builds the snapshot from the key-values under `prefix`, in devstack's
    /// default layout: `<prefix>/<service>/<container-id>` → JSON [`Instance`]
    /// (the layout is [`super::layout`]'s). Keys or values in another layout
    /// are kept in `kvs` only.
    pub fn from_kvs(prefix: &str, kvs: impl IntoIterator<Item = (String, String)>) -> Registry {
        let mut registry = Registry::default();
        for (key, value) in kvs {
            if key.chars().chain(value.chars()).any(char::is_control) {
                registry.skipped.push(Skipped {
                    key,
                    reason: "the key or its value holds a control character (a line break?)".into(),
                });
                continue;
            }
            if let Some((service, id)) = split_key(prefix, &key) {
                match parse_instance(service, id, &value) {
                    Some(Ok(instance)) => registry
                        .services
                        .entry(instance.service.clone())
                        .or_default()
                        .push(instance),
                    Some(Err(reason)) => registry.skipped.push(Skipped {
                        key: key.clone(),
                        reason,
                    }),
                    None => {}
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

/// A value is devstack's JSON, or the `host:port` of registrator-style
/// registries. `None`: not shaped like an instance at all (another layout's
/// value, kept for templates); `Some(Err)`: shaped like one, but unusable.
fn parse_instance(service: &str, id: &str, value: &str) -> Option<Result<Instance, String>> {
    let trimmed = value.trim();
    if trimmed.starts_with('{') {
        let Ok(object) = serde_json::from_str::<serde_json::Value>(trimmed) else {
            return None;
        };
        if object.get("address").is_none() && object.get("port").is_none() {
            return None;
        }
        let mut instance = match serde_json::from_value::<Instance>(object) {
            Ok(i) => i,
            Err(e) => return Some(Err(format!("not an instance: {e}"))),
        };
        if instance.service.is_empty() {
            instance.service = service.to_string();
        }
        if instance.id.is_empty() {
            instance.id = id.to_string();
        }
        return Some(checked(instance));
    }
    let (host, port) = trimmed.rsplit_once(':')?;
    let port = match port.parse::<u32>() {
        Ok(p) => u16::try_from(p).unwrap_or(0),
        Err(_) => return Some(Err(format!("the port `{port}` is not a number"))),
    };
    Some(checked(Instance {
        service: service.to_string(),
        id: id.to_string(),
        replica: 0,
        address: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
        image: String::new(),
        version: String::new(),
    }))
}

/// The instance, if every field is safe to hand to HAProxy as one token.
fn checked(instance: Instance) -> Result<Instance, String> {
    if !is_address(&instance.address) {
        return Err(format!(
            "the address {:?} is neither an IP address nor a DNS name",
            instance.address
        ));
    }
    if instance.port == 0 {
        return Err("the port must be a number from 1 to 65535".into());
    }
    for (field, text, may_be_empty) in [
        ("service", &instance.service, false),
        ("id", &instance.id, false),
        ("image", &instance.image, true),
        ("version", &instance.version, true),
    ] {
        if !(is_token(text) || may_be_empty && text.is_empty()) {
            return Err(format!("the {field} {text:?} is not a single plain word"));
        }
    }
    Ok(instance)
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
        assert!(registry.skipped.is_empty(), "{:?}", registry.skipped);
    }

    /// Reads one key-value under `/services` and says what became of it.
    fn one(key: &str, value: &str) -> Registry {
        Registry::from_kvs("/services", [(key.to_string(), value.to_string())])
    }

    fn json(address: &str, port: serde_json::Value) -> String {
        serde_json::json!({"service": "api", "id": "c1", "address": address, "port": port})
            .to_string()
    }

    #[test]
    fn hostile_values_are_skipped_with_their_key() {
        let hostile = [
            // A line break in the raw value: a new line of configuration.
            (
                "/services/api/nl",
                "10.0.0.1:80\nprogram x\n  command sh".to_string(),
            ),
            // The same inside JSON (escaped in the text, a newline once read).
            ("/services/api/jnl", json("10.0.0.1\nprogram x", 80.into())),
            // A `;` would end a master CLI command and start another.
            (
                "/services/api/semi",
                json("10.0.0.1;@master reload", 80.into()),
            ),
            ("/services/api/semi2", "10.0.0.1;reload:80".to_string()),
            // Spaces, quotes and `#` would be more words, or a comment.
            ("/services/api/space", json("10.0.0.1 backup", 80.into())),
            ("/services/api/quote", json("\"10.0.0.1\"", 80.into())),
            ("/services/api/hash", json("10.0.0.1#", 80.into())),
            ("/services/api/hash2", "host#x:80".to_string()),
            // Ports out of range or not numbers.
            ("/services/api/p0", json("10.0.0.1", 0.into())),
            ("/services/api/pbig", json("10.0.0.1", 70000.into())),
            ("/services/api/pbig2", "10.0.0.1:70000".to_string()),
            ("/services/api/pword", "10.0.0.1:eighty".to_string()),
            ("/services/api/pneg", json("10.0.0.1", (-1).into())),
            // A single-token field that is not one.
            (
                "/services/api/img",
                serde_json::json!({"address": "10.0.0.1", "port": 80, "image": "a b"}).to_string(),
            ),
        ];
        for (key, value) in &hostile {
            let registry = one(key, value);
            assert!(registry.instances("api").is_empty(), "{key}: {registry:?}");
            assert_eq!(registry.skipped.len(), 1, "{key}: {registry:?}");
            assert_eq!(registry.skipped[0].key, *key);
            if value.contains('\n') {
                assert!(registry.kvs.is_empty(), "{key}: kept for templates");
            }
        }
        // A key with a line break is skipped too, whatever its value.
        let registry = one("/services/api/c1\nprogram", "10.0.0.1:80");
        assert!(registry.instances("api").is_empty() && registry.kvs.is_empty());
        assert_eq!(registry.skipped.len(), 1);
    }

    #[test]
    fn good_values_beside_hostile_ones_are_kept() {
        let registry = Registry::from_kvs(
            "/services",
            vec![
                (
                    "/services/api/good".to_string(),
                    json("172.18.0.2", 8080.into()),
                ),
                (
                    "/services/api/name".to_string(),
                    json("api-2.internal", 8080.into()),
                ),
                ("/services/api/v6".to_string(), "[fd00::2]:8080".to_string()),
                (
                    "/services/api/bad".to_string(),
                    json("1.2.3.4\nlisten x", 80.into()),
                ),
                // Another layout's value: not an instance, no warning.
                (
                    "/services/config/x".to_string(),
                    "{\"debug\": true}".to_string(),
                ),
            ],
        );
        let addresses: Vec<&str> = registry
            .instances("api")
            .iter()
            .map(|i| i.address.as_str())
            .collect();
        assert_eq!(addresses, ["172.18.0.2", "api-2.internal", "fd00::2"]);
        assert_eq!(registry.skipped.len(), 1);
        assert_eq!(registry.skipped[0].key, "/services/api/bad");
        assert!(
            registry.skipped[0].reason.contains("address"),
            "{:?}",
            registry.skipped
        );
    }

    #[test]
    fn addresses_and_tokens() {
        for good in [
            "10.0.0.1",
            "::1",
            "fd00::2",
            "web",
            "a-b.c_d.internal",
            "x.",
        ] {
            assert!(is_address(good), "{good}");
        }
        for bad in [
            "", "a b", "a;b", "a\nb", "-a", "a..b", "a#", "\"a\"", "a/b", "a:b",
        ] {
            assert!(!is_address(bad), "{bad:?}");
        }
        assert!(is_token("api:git-1f2e@sha256"));
        for bad in [
            "", "a b", "a;b", "a#b", "a\"b", "a'b", "a\\b", "${X}", "a\tb",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
