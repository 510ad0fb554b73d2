//! `just bench-etcd`: the embedded etcd against a real etcd on this machine.

fn main() {}
