//! Unit tests of the pure store.
