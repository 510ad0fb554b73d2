//! Only `alive`, which `engine::apply` asks here: the state directory and its
//! files belong to `controller::state` now. This goes once `apply` asks
//! `process::alive` itself (the engine must not reach into the router).

pub use crate::process::alive;
