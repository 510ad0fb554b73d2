//! The router: the confd part of the pipeline. It renders the proxy
//! configuration from a snapshot of the registry and the stack's routes.
//!
//! Rendering is pure: it never asks Docker or etcd, only reads the snapshot
//! it is given.

pub mod registry;
pub mod render;

pub use registry::{Instance, Registry};
pub use render::{render, view, RenderError, View, BUILTIN_TEMPLATE};
