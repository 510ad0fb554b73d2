//! The source watcher: file changes in services' build contexts become rebuilds and blue-green swaps.
//!
//! The path a save takes: [`fs`] turns notify events into hits (service, file),
//! dropping what [`filter`] says never triggers; [`burst`] coalesces a burst
//! of hits into one [`Burst`] per service; [`swap`] builds the new image and
//! replaces the running containers one replica at a time, the new one joining
//! before the old one leaves (or, when [`dockerfile`] shows the files reach
//! the image only through `COPY` steps after the last `RUN`, makes the new
//! containers from the previous image with the files [`fast`] packed placed
//! in them, the real build running behind); or [`sync`] copies the changed
//! files into the running containers. [`edit`] says what an edit of the stack file itself
//! asks of the running stack.

pub mod burst;
pub mod dockerfile;
pub mod edit;
pub mod fast;
pub mod filter;
pub mod fs;
pub mod swap;
pub mod sync;

use std::path::PathBuf;

pub use burst::{Burst, Coalescer};
pub use filter::Filter;

/// One file event that concerns a service (after filtering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub service: String,
    pub file: PathBuf,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("service `{service}`: ignore pattern `{pattern}`: {message}")]
    Pattern {
        service: String,
        pattern: String,
        message: String,
    },
    #[error("service `{service}`: {message}")]
    Context { service: String, message: String },
    #[error("cannot watch `{path}`: {message}")]
    Notify { path: String, message: String },
}
