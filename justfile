# devstack's everyday commands. `just --list` shows them all.

# The demo stack: public images, or their local replicas where no registry
# answers (stacks/demo/choose-images.sh decides and says why).
demo := "stacks/demo/devstack.yaml"

default:
    @just --list

# Build the devstack binary
build:
    cargo build

# Build the local fixture images the tests use, and the demo where no registry answers (about a second when current)
fixtures:
    bash fixtures/images/build.sh

# Check every fixture image really works (runs each, then cleans up)
fixtures-verify: fixtures
    bash fixtures/images/verify.sh

# Bring the demo stack up: public images pulled where a registry answers, else local replicas built (Linux, root)
up: build
    #!/usr/bin/env bash
    set -euo pipefail
    chosen=$(bash stacks/demo/choose-images.sh)
    files=()
    while IFS= read -r file; do files+=(-f "$file"); done <<< "$chosen"
    exec ./target/debug/devstack "${files[@]}" up

# Take the demo stack down and remove its volumes
down: build
    ./target/debug/devstack -f {{demo}} down --volumes

# Run the whole test suite: unit, CLI, Docker engine and etcd conformance tests
test: fixtures
    cargo test --no-fail-fast

# Check formatting and lints
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Fuzz the stack parser with cargo-fuzz (needs a nightly toolchain); the property test in `just test` covers CI
fuzz seconds="60":
    cargo +nightly fuzz run stack_parser -- -max_total_time={{seconds}}

# Benchmark: devstack up vs docker-compose up on a 12-unit stack
bench-up: fixtures
    cargo bench --bench up

# Benchmark: healthy → routed and killed → out through HAProxy and nginx, and failed requests over reloads, vs a confd-style loop restarting the proxy
bench-routing: fixtures
    cargo bench --bench routing

# Benchmark: devstack watch (rebuild, sync) vs a hand-written docker build/run and docker cp loop
bench-watch: fixtures
    cargo bench --bench watch

# Benchmark: devstack data snapshot/restore/export vs pg_dump -Fc + pg_restore on about 1 GB of postgres data (DEVSTACK_BENCH_DATA_MB lowers it)
bench-data: fixtures
    cargo bench --bench data

# Benchmark: four copies of a 6-unit stack tested in parallel vs one after another, devstack test vs docker-compose -p (up, check, down)
bench-ci: fixtures
    cargo bench --bench ci

# Benchmark: the demo stack's idle routing agent (RSS, CPU) beside its probes run alone, and no-op `ps`/`up` timings
bench-agent: fixtures
    cargo bench --bench agent

# Benchmark: the embedded etcd vs a real etcd server (Debian's), same client: throughput, watch latency, memory
bench-etcd:
    cargo bench --bench etcd

# Type-check (clippy) the crate for macOS and Windows: adds the targets with rustup, C sources stand in (nothing is linked)
check-portable:
    #!/usr/bin/env bash
    set -euo pipefail
    cc="$(pwd)/fixtures/cross/stand-in-cc"
    for target in aarch64-apple-darwin x86_64-pc-windows-gnu; do
        rustup target add "$target"
        var=$(echo "$target" | tr '-' '_')
        env "CC_$var=$cc" "AR_$var=ar" CARGO_TARGET_DIR=target/portable \
            cargo clippy --target "$target" --lib --bins -- -D warnings
    done
