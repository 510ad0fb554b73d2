//! Integration tests of `up`, `down` and friends against the real Docker
//! engine, through the built binary. They fail (never skip) when no engine
//! answers, and build the local fixture images first when they are missing.

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/shown.rs"]
mod shown;
mod support;

mod datastores;
mod doctor;
mod failures;
mod follow;
mod lifecycle;
mod logs;
mod processes;
mod pull;
mod routed;
mod schema;
mod side_by_side;
mod testcmd;
mod volumes;
