//! Datastores as their official images behave: what each kind is (port,
//! readiness, connection URL), and seed data loaded by kind once per fresh
//! data volume.
//!
//! - `spec::kinds`: the table per kind; pure (in `spec`, which needs it to resolve URLs).
//! - [`seed`]: the commands that load seed files, the seed-or-not decision,
//!   and where a failing file failed; pure.
//! - [`wal`]: the files a copy of a data directory can leave out (postgres's
//!   recycled WAL segments); pure.
//! - `engine::seeding`: seeding carried out through the engine, called by `up`.
//! - `engine::snapshot`: snapshots of data volumes, kept on the engine as volumes.

pub mod seed;
pub mod wal;
