//! The router: the confd part of the pipeline. It renders the proxy
//! configuration from a snapshot of the registry and the stack's routes, and
//! (in [`confd`]) keeps the proxy container serving the registry as it changes.
//!
//! The proxy is HAProxy or nginx (`proxy.kind`): [`render`] has a built-in
//! template for each, and [`nginx`] applies a change to nginx (a checked,
//! rolled-back-on-failure reload) where HAProxy's path uses its runtime API.
//!
//! Rendering is pure: it never asks Docker or etcd, only reads the snapshot
//! it is given. The loop in [`confd`] is the only part that talks to etcd and
//! (through `engine`) to the proxy container.

pub mod confd;
pub mod debounce;
pub mod gotemplate;
pub mod layout;
pub mod nginx;
pub mod registry;
pub mod render;
pub mod served;

pub use confd::{start, Change, RouterConfig, RouterEvent, RouterHandle};
pub use layout::Layout;
pub use registry::{Instance, Registry};
pub use render::{
    builtin_template, render, render_for, view, view_keeping, RenderError, View, BUILTIN_TEMPLATE,
    NGINX_TEMPLATE,
};
