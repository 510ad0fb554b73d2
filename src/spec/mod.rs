//! The stack format: parsing, interpolation, merging and validation.
//!
//! [`load`] turns stack files into a [`Stack`] or a [`Report`] of every
//! problem found, each with its file, line, column and field path. Nothing
//! downstream ever sees an invalid stack.

pub mod confd;
pub mod decode;
pub mod diagnostic;
pub mod envfile;
pub mod host;
pub mod import;
pub mod interpolate;
pub mod kinds;
pub mod load;
pub mod merge;
pub mod model;
pub mod refs;
pub mod units;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Problem, Report};
pub use load::{load, load_with_notes, LoadOptions, Loaded};
pub use model::*;

#[cfg(test)]
mod tests;
