//! Generates the etcd v3 API (messages, tonic servers and clients) from
//! devstack's own description in `proto/etcd/`. The .proto files are parsed
//! by `protox`, in Rust, so building devstack needs no `protoc`.

use std::path::Path;

const ROOT: &str = "proto/etcd";
const FILES: [&str; 3] = [
    "mvccpb/kv.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
];

fn main() {
    println!("cargo:rerun-if-changed={ROOT}");
    for file in FILES {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(ROOT).join(file).display()
        );
    }
    // A build script has no better way to fail than to stop with the reason.
    let fds = protox::compile(FILES, [ROOT])
        .unwrap_or_else(|e| panic!("the etcd API in {ROOT}/ does not parse: {e:?}"));
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("cannot generate the etcd API from {ROOT}/: {e}"));
}
