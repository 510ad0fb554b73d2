//! The registrar: the presence service, done once for all containers.
//!
//! A container of a service that passes its health check is written to etcd
//! under a lease with the stack's TTL, kept alive while it lives; one that
//! stops, dies, is killed or turns unhealthy is deleted at once (its lease
//! revoked), not left to expire. At start, and whenever etcd comes back, the
//! registry is resynchronised with what runs.
//!
//! - [`template`]: a registration's key and value (devstack's layout or the stack's templates).
//! - [`presence`]: the loop over Docker events, health monitors and leases.

pub mod presence;
pub mod template;

pub use presence::{
    start, Known, KnownContainer, RegistrarConfig, RegistrarEvent, RegistrarHandle,
    UNROUTED_INTERVAL,
};
pub use template::{key_of, value_of, Presence};
