//! Quick looks at any etcd (this server, a stack's registry, a real cluster),
//! as etcdctl takes them: get, put, del, ls and watch over [`super::rpc`],
//! each answer as plain values for `devstack etcd` to print.

use std::time::Duration;

use serde::Serialize;

use super::pb::etcdserverpb::RangeRequest;
use super::pb::mvccpb::{self, event::EventType};
use super::rpc::{self, Client, Timeouts, WatchStream};

/// What a quick look could not do, and where.
#[derive(Debug, thiserror::Error)]
pub enum LookError {
    #[error("no etcd answered at {0} within 5 s")]
    Timeout(String),
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Unreachable {
        endpoints: String,
        source: rpc::Error,
    },
    #[error("etcd at {endpoints}: {source}")]
    Request {
        endpoints: String,
        source: rpc::Error,
    },
    /// The server ended a watch (`: revision N is compacted`, `: reason`, or nothing).
    #[error("watch canceled by the server{0}")]
    Canceled(String),
}

/// One key as etcd holds it (`etcdctl get -w json`, keys and values as text).
#[derive(Debug, Clone, Serialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl From<&mvccpb::KeyValue> for Kv {
    fn from(kv: &mvccpb::KeyValue) -> Kv {
        Kv {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// One change a watch saw: a put (with the new value) or a delete.
#[derive(Debug, Clone)]
pub struct Event {
    pub put: bool,
    pub kv: Kv,
}

/// A client of one etcd, named by its endpoints in every error.
pub struct Look {
    client: Client,
    endpoints: String,
}

impl Look {
    /// Connects within 5 s.
    pub async fn connect(endpoints: &[String]) -> Result<Look, LookError> {
        let joined = endpoints.join(",");
        let client = tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect(endpoints, Timeouts::default()),
        )
        .await
        .map_err(|_| LookError::Timeout(joined.clone()))?
        .map_err(|source| LookError::Unreachable {
            endpoints: joined.clone(),
            source,
        })?;
        Ok(Look {
            client,
            endpoints: joined,
        })
    }

    /// The endpoints, comma-separated, as connected to.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn failed(&self, source: rpc::Error) -> LookError {
        LookError::Request {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    /// The key (or every key under it as a prefix) and the store's revision.
    /// A missing key is no error, as with `etcdctl get`.
    pub async fn get(&mut self, key: &str, prefix: bool) -> Result<(i64, Vec<Kv>), LookError> {
        let resp = self
            .client
            .get(key, prefix)
            .await
            .map_err(|e| self.failed(e))?;
        let revision = resp.header.map_or(0, |h| h.revision);
        Ok((revision, resp.kvs.iter().map(Kv::from).collect()))
    }

    /// Sets the key; the revision of the write.
    pub async fn put(&mut self, key: &str, value: &str) -> Result<i64, LookError> {
        let resp = self
            .client
            .put(key, value, 0)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Deletes the key (or every key under it); how many went.
    pub async fn del(&mut self, key: &str, prefix: bool) -> Result<i64, LookError> {
        let resp = self
            .client
            .delete(key, prefix)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(resp.deleted)
    }

    /// The keys under `prefix`; every key when it is empty.
    pub async fn ls(&mut self, prefix: &str) -> Result<Vec<String>, LookError> {
        let (key, range_end) = rpc::range_of(prefix.into(), true);
        let req = RangeRequest {
            key,
            range_end,
            keys_only: true,
            ..Default::default()
        };
        let resp = self.client.range(req).await.map_err(|e| self.failed(e))?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect())
    }

    /// Watches the key (or prefix), from revision `rev` when given.
    pub async fn watch(
        mut self,
        key: &str,
        prefix: bool,
        rev: Option<i64>,
    ) -> Result<Watch, LookError> {
        let create = rpc::watch_of(key, prefix, rev.unwrap_or(0));
        let stream = self
            .client
            .watch(create)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Watch { stream, look: self })
    }
}

/// A watch being followed.
pub struct Watch {
    stream: WatchStream,
    look: Look,
}

impl Watch {
    /// The next batch of events; `None` once the server ends the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<Event>>, LookError> {
        let msg = self
            .stream
            .message()
            .await
            .map_err(|e| self.look.failed(e))?;
        let Some(resp) = msg else { return Ok(None) };
        if resp.canceled {
            let why = if resp.compact_revision > 0 {
                format!(": revision {} is compacted", resp.compact_revision)
            } else if resp.cancel_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", resp.cancel_reason)
            };
            return Err(LookError::Canceled(why));
        }
        Ok(Some(
            resp.events
                .iter()
                .filter_map(|ev| {
                    ev.kv.as_ref().map(|kv| Event {
                        put: ev.r#type() == EventType::Put,
                        kv: Kv::from(kv),
                    })
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{Server, ServerConfig};

    #[tokio::test]
    async fn quick_looks_put_get_ls_watch_and_del_against_a_server() {
        let server = Server::start(ServerConfig::in_memory("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("server");
        let endpoints = vec![server.client_url()];
        let mut look = Look::connect(&endpoints).await.expect("connect");
        assert_eq!(look.endpoints(), endpoints[0]);
        let rev = look.put("/a/1", "one").await.unwrap();
        look.put("/a/2", "two").await.unwrap();
        look.put("/b", "bee").await.unwrap();
        let (now, kvs) = look.get("/a/", true).await.unwrap();
        assert!(now > rev);
        let got: Vec<_> = kvs.iter().map(|kv| (&*kv.key, &*kv.value)).collect();
        assert_eq!(got, [("/a/1", "one"), ("/a/2", "two")]);
        assert_eq!(kvs[0].mod_revision, rev);
        assert!(look.get("/none", false).await.unwrap().1.is_empty());
        assert_eq!(look.ls("").await.unwrap(), ["/a/1", "/a/2", "/b"]);
        assert_eq!(look.ls("/a").await.unwrap(), ["/a/1", "/a/2"]);
        // A watch from the first put replays history: puts, then the delete.
        assert_eq!(look.del("/a/", true).await.unwrap(), 2);
        let watcher = Look::connect(&endpoints).await.unwrap();
        let mut watch = watcher.watch("/a/1", false, Some(rev)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let events = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
                .await
                .expect("events in time")
                .unwrap()
                .expect("the watch goes on");
            seen.extend(events.into_iter().map(|e| (e.put, e.kv.key)));
        }
        assert_eq!(seen, [(true, "/a/1".into()), (false, "/a/1".into())]);
        server.shutdown().await;
    }
}
