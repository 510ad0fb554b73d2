//! The registry's key layout, the one owner of where registrations live in
//! etcd: the registrar writes by it, the router and `routes` read by it, the
//! swap finds a container's registration by it.
//!
//! Two kinds of keys:
//! - registrations, under the prefix: `<prefix>/<service>/<container-id>` by
//!   default (or the stack's `discovery.key`). The prefix is the stack's
//!   `discovery.prefix` when it gives one (a production layout, on purpose
//!   shared by every copy that uses the same etcd), else
//!   `/services/<project>`, so copies of a stack under different project
//!   names never read or write each other's registrations.
//! - ownership records, outside the prefix: `/devstack/<project>/registrations/<container-id>`,
//!   put on the registration's lease in the same transaction, its value
//!   naming the registration's key. They are how the registrar knows what it
//!   made (a key under a shared prefix, a hand-made key, another copy's key
//!   all look alike), and how the swap finds a container's key by its exact
//!   id whatever the key template. Being outside the prefix, no template and
//!   no router ever sees them.

use serde::{Deserialize, Serialize};

use crate::spec::Discovery;

/// The prefix of a stack that gives none, before the project.
pub const DEFAULT_PREFIX: &str = "/services";

/// Where ownership records live, before the project.
const RECORDS_ROOT: &str = "/devstack";

/// The keys of one project's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Without a trailing `/` (empty for a stack whose prefix is `/`).
    prefix: String,
    project: String,
}

/// The value of an ownership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The registration's key.
    pub key: String,
}

impl Layout {
    pub fn new(discovery: &Discovery, project: &str) -> Layout {
        let prefix = match &discovery.prefix {
            Some(prefix) => prefix.trim_end_matches('/').to_string(),
            None => format!("{DEFAULT_PREFIX}/{project}"),
        };
        Layout {
            prefix,
            project: project.to_string(),
        }
    }

    /// The registry prefix, without a trailing `/`: what templates see as `prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key to list (with etcd's prefix option) or watch for every registration.
    pub fn listing(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The key of a registration in devstack's default layout.
    pub fn key(&self, service: &str, id: &str) -> String {
        join_key(&self.prefix, service, id)
    }

    /// The key to list for every ownership record of the project.
    pub fn records(&self) -> String {
        format!("{RECORDS_ROOT}/{}/registrations/", self.project)
    }

    /// The ownership record of container `id` (its full id).
    pub fn record(&self, id: &str) -> String {
        format!("{}{id}", self.records())
    }

    /// The container id an ownership record key is about.
    pub fn record_id<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.records())?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// The key of container `id` of `service` in the default layout under
/// `prefix` (without a trailing `/`); [`split_key`] reads it back.
pub fn join_key(prefix: &str, service: &str, id: &str) -> String {
    format!("{prefix}/{service}/{id}")
}

/// The `(service, id)` of a key in the default layout under `prefix`
/// (without a trailing `/`): exactly two segments below it, so keys of a
/// deeper layout (another copy's `<prefix>/<project>/<service>/<id>`) are
/// not taken for instances.
pub fn split_key<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = key
        .strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')?;
    let (service, id) = rest.split_once('/')?;
    (!service.is_empty() && !id.is_empty() && !id.contains('/')).then_some((service, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Etcd;
    use std::time::Duration;

    fn discovery(prefix: Option<&str>) -> Discovery {
        Discovery {
            etcd: Etcd::Embedded,
            prefix: prefix.map(str::to_string),
            ttl: Duration::from_secs(30),
            key: None,
            value: None,
        }
    }

    #[test]
    fn the_default_prefix_belongs_to_the_project() {
        let a = Layout::new(&discovery(None), "a");
        let b = Layout::new(&discovery(None), "b");
        assert_eq!(a.prefix(), "/services/a");
        assert_eq!(a.key("api", "c1"), "/services/a/api/c1");
        assert!(!b.key("api", "c1").starts_with(&a.listing()));
        // `a-b` is not under `a`.
        let ab = Layout::new(&discovery(None), "a-b");
        assert!(!ab.key("api", "c1").starts_with(&a.listing()));
        assert!(!ab.record("c1").starts_with(&a.records()));
    }

    #[test]
    fn a_given_prefix_is_kept_for_every_copy() {
        let a = Layout::new(&discovery(Some("/services/")), "a");
        let b = Layout::new(&discovery(Some("/services")), "b");
        assert_eq!(a.prefix(), "/services");
        assert_eq!(a.listing(), b.listing());
        // Records stay per project, outside the prefix.
        assert_ne!(a.records(), b.records());
        assert!(!a.record("c1").starts_with(&a.listing()));
        let root = Layout::new(&discovery(Some("/")), "a");
        assert_eq!(root.listing(), "/");
        assert_eq!(root.key("api", "c1"), "/api/c1");
    }

    #[test]
    fn records_name_exact_ids() {
        let a = Layout::new(&discovery(None), "a");
        let key = a.record("abc123");
        assert_eq!(key, "/devstack/a/registrations/abc123");
        assert_eq!(a.record_id(&key), Some("abc123"));
        assert_eq!(a.record_id("/devstack/a/registrations/"), None);
        assert_eq!(a.record_id("/devstack/ab/registrations/x"), None);
        assert_eq!(a.record_id("/devstack/a/registrations/x/y"), None);
    }

    #[test]
    fn keys_split_two_segments_below_the_prefix() {
        assert_eq!(
            split_key("/services", "/services/api/c1"),
            Some(("api", "c1"))
        );
        assert_eq!(
            split_key("/services/", "/services/api/c1"),
            Some(("api", "c1"))
        );
        assert_eq!(split_key("", "/api/c1"), Some(("api", "c1")));
        assert_eq!(split_key("/services", "/services/b/api/c1"), None);
        assert_eq!(split_key("/services", "/services/config"), None);
        assert_eq!(split_key("/services", "/servicesx/api/c1"), None);
        assert_eq!(split_key("/services", "/elsewhere/api/c1"), None);
    }
}
