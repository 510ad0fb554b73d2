//! The stack format: parsing, interpolation, merging and validation.
//!
//! `load` turns stack files into a [`Stack`] or a list of every problem found,
//! each with its file, line, column and field path. Nothing downstream ever
//! sees an invalid stack.

pub mod diagnostic;
pub mod interpolate;
pub mod merge;
pub mod model;
pub mod units;
pub mod yaml;

pub use model::*;
