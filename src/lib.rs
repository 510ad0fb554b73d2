//! devstack: a team's production service definitions, run as a local stack.
//!
//! The modules follow the pipeline (see ARCHITECTURE.md):
//!
//! - `spec::import`: Compose files, Kubernetes manifests and fleet units read as stack files.
//! - [`export`]: a stack written out as a Compose file for Docker Swarm or Kubernetes manifests.
//! - [`spec`]: the stack format; parsing, interpolation, overlays and validation.
//! - [`plan`]: pure planning: desired containers, config hashes, dependency order, diffs.
//! - [`datastore`]: datastore kinds (readiness, URLs) and seed data loaded by kind.
//! - [`engine`]: the only code that talks to Docker (bollard): build, run, probe, logs, exec, events.
//! - [`etcd`]: the embedded etcd v3 server.
//! - [`registrar`]: presence: healthy containers written to etcd under leases.
//! - [`router`]: the proxy configuration rendered from a registry snapshot.
//! - [`watcher`]: source watching, debounced rebuilds and blue-green swaps.
//! - [`process`]: who a process is (pid, start time, project), checked before it is trusted or signalled.
//! - [`controller`]: one running stack: its state directory, routing path, file follower and watch loop.
//! - [`ui`]: what commands show: printing macros, exit codes, progress, tables, log streaming.
//! - [`cli`]: the command line; clap types stop here.

// First: its printing macros are used by every module after it.
#[macro_use]
pub mod ui;

pub mod cli;
pub mod controller;
pub mod datastore;
pub mod engine;
pub mod etcd;
pub mod export;
pub mod plan;
pub mod process;
pub mod registrar;
pub mod router;
pub mod spec;
pub mod watcher;
