//! Debian's real etcd as a one-member cluster on loopback, for the tests and
//! benchmarks that compare devstack with it or run the routing path against it.

use std::path::Path;
use std::process::Command;

/// The command that runs the real etcd named `name`, keeping its data in
/// `data_dir` and serving clients on `client_url`; the caller adds flags,
/// chooses where its output goes and spawns it.
pub fn command(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> Command {
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")]);
    cmd
}
