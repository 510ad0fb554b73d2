//! Integration tests of the discovery and routing path on the real engine:
//! the registrar writing healthy containers into etcd (embedded or Debian's
//! real etcd), the router rendering HAProxy (or nginx) from it, and requests
//! through the proxy container of the stack. They fail, never skip, without an engine
//! or the fixture images.

mod confd;
mod control;
mod copies;
mod hostile;
mod path;
#[path = "../support/real_etcd.rs"]
mod real_etcd;
mod reloads;
mod support;
mod template;
