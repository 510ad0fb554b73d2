//! The embedded etcd against the real thing: conformance with a real etcd
//! (Debian's etcd-server), etcdctl against the embedded server, and crash
//! safety of `devstack etcd serve`, its data directory, and hostile clients.

mod conformance;
mod crash;
mod datadir;
mod etcdctl;
mod harness;
mod hostile;
mod random;
#[path = "../support/real_etcd.rs"]
mod real_etcd;
