//! `just bench-up`: devstack up versus docker-compose up on the same stack (filled in below).
fn main() {}
