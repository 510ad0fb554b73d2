//! devstack: a team's production service definitions, run as a local stack.
//!
//! The modules follow the pipeline (see ARCHITECTURE.md):
//!
//! - [`spec`]: the stack format; parsing, interpolation, overlays and validation.
//! - [`etcd`]: the embedded etcd v3 server.
//! - [`cli`]: the command line; clap types stop here.

pub mod cli;
pub mod etcd;
pub mod spec;
