//! Issue 15, "the host cannot reach bridge addresses", simulated on a Linux
//! engine: a firewall rule drops every connection the devstack processes
//! start towards the stack network's subnet, as Docker Desktop's VM or a
//! host without a route to the bridge would. Under it the routed web stack
//! of the watch tests (a `build:` service, two replicas, behind the proxy)
//! must come up and be routed, decide `published` as its reach, keep
//! serving when a replica is killed, keep its registrations when its routing
//! agent is killed and started again, keep the proxy's control port out of
//! its containers' reach, and swap on a save without one failed request.
//!
//! The rule matches devstack's own traffic only: every devstack command of
//! the stack runs in a cgroup v2 directory of this test (the routing agent
//! it starts inherits it), and the rule is
//! `OUTPUT -o <bridge> -d <subnet> -m cgroup --path <dir> -m conntrack
//! --ctstate NEW -j DROP`. So
//! - Docker's userland proxy (`docker-proxy`, outside that cgroup), which
//!   forwards a port published on 127.0.0.1 by connecting from the host to
//!   the container's address, still works: that is the path under test;
//! - replies of devstack's embedded etcd to the containers (connections the
//!   containers start) still leave;
//! - the network's gateway, a local address reached over `lo`, stays
//!   reachable (the embedded etcd listens there);
//! - the test itself, outside the cgroup, requests the proxy as a user would;
//! - nothing else on the machine (other tests, other helpers) is affected.
//!
//! The network is made by the test (with the project label, so devstack
//! adopts it) so that its subnet is known before the first devstack command.
//!
//! The reverse, "containers cannot reach the host's gateway address", is
//! the second test: a rule in INPUT drops every connection the stack's
//! subnet opens to the network's gateway (`INPUT -s <subnet> -d <gateway>
//! -m conntrack --ctstate NEW -j DROP`), as on Docker Desktop or a remote
//! engine, where the gateway is no address of devstack's host. Their
//! `host.docker.internal` (the default bridge's gateway, another address of
//! this host) still answers, so the embedded registry listens there
//! (`registry: host-gateway`) and the same stack must come up routed,
//! survive a killed replica and a restarted agent, its containers reaching
//! the registry as `etcd:2379`. The third test drops every connection the
//! stack's subnet opens to this host (`INPUT -s <subnet> -m conntrack
//! --ctstate NEW -j DROP`): the registry then moves into the stack
//! (`<project>-registry`, `registry: stack`), and the same stack must come
//! up routed, survive a killed replica and a restarted agent, and swap on a
//! save without a failed request. The fourth test puts the first rule and
//! the whole-host reverse one on one stack: the registry runs in the stack
//! and devstack reaches it on its port published on 127.0.0.1.
//!
//! They change the host's firewall, so they run one at a time and are the
//! only tests of their binary, and they undo the rules and the cgroup even
//! when they fail: a guard's `Drop` and a panic hook both do (as
//! `tests/swarm` does for its swarm).

#[path = "../support/fixtures.rs"]
mod fixtures;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/state.rs"]
mod state;
#[path = "../support/undoing.rs"]
mod undoing;
#[path = "../support/watched.rs"]
mod watched;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use process::run;
use state::routing_state;
use undoing::Undoing;
use watched::*;

/// `docker ARGS`, trimmed stdout; a failure fails the test.
fn docker_ok(args: &[&str]) -> String {
    let out = run("docker", args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts is readable");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
        .expect("cgroup v2 is mounted (the firewall rule matches devstack's processes by it)")
}

/// One change the running test must undo, taken (once) by whichever of the
/// guard's drop and the panic hook comes first.
struct Undo {
    /// The chain (`OUTPUT`, `INPUT`) and the rule's specification, as given
    /// to `iptables -I`.
    chain: &'static str,
    rule: Vec<String>,
    /// The cgroup directory devstack's commands ran in, if the rule has one.
    cgroup: Option<PathBuf>,
}

static UNDO: Mutex<Vec<Undo>> = Mutex::new(Vec::new());

/// One test at a time: each changes the firewall, and the panic hook
/// undoes whatever is recorded.
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes each recorded rule, moves any process still in its cgroup back
/// to the root and removes the directory. Returns what could not be undone.
/// No panic in here: it also runs inside the panic hook.
fn undo() -> Vec<String> {
    let undos = std::mem::take(&mut *UNDO.lock().unwrap_or_else(|e| e.into_inner()));
    let mut failed = Vec::new();
    for undo in undos {
        let mut args = vec!["-w", "-D", undo.chain];
        args.extend(undo.rule.iter().map(String::as_str));
        match Command::new("iptables").args(&args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => failed.push(format!(
                "`iptables {}`: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => failed.push(format!("cannot run iptables: {e}")),
        }
        let Some(cgroup) = undo.cgroup else { continue };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A process left behind (an agent a failed `down` did not stop)
            // goes back to the root cgroup, so the directory can go.
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(cgroup2_root().join("cgroup.procs"), pid);
            }
            match std::fs::remove_dir(&cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() > deadline => {
                    failed.push(format!("cannot remove {}: {e}", cgroup.display()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    failed
}

/// The network's IPv4 subnet and its bridge's name.
fn subnet_and_bridge(network: &str) -> (String, String) {
    let id = docker_ok(&["network", "inspect", "-f", "{{.Id}}", network]);
    let subnet = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        network,
    ]);
    let subnet = subnet
        .split_whitespace()
        .find(|s| s.contains('.'))
        .expect("an IPv4 subnet")
        .to_string();
    (subnet, format!("br-{}", &id[..12]))
}

/// The network's IPv4 gateway address.
fn gateway(network: &str) -> String {
    let gateways = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        network,
    ]);
    gateways
        .split_whitespace()
        .find(|s| s.contains('.'))
        .expect("an IPv4 gateway")
        .to_string()
}

/// Records `undo` for [`undo`] (the guard armed first), then makes its
/// cgroup, if any, and inserts its rule.
fn insert(undo: Undo) -> Undoing {
    let guard = Undoing::arm("reach test", self::undo);
    let (chain, rule, cgroup) = (undo.chain, undo.rule.clone(), undo.cgroup.clone());
    UNDO.lock().unwrap_or_else(|e| e.into_inner()).push(undo);
    if let Some(dir) = cgroup {
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
    }
    let mut args = vec!["-w", "-I", chain];
    args.extend(rule.iter().map(String::as_str));
    let out = run("iptables", &args);
    assert!(
        out.status.success(),
        "`iptables {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    guard
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Makes the cgroup and inserts the rule that keeps devstack's processes
/// from opening connections to the network `network` (already made).
fn firewall(network: &str) -> (Undoing, PathBuf) {
    let (subnet, bridge) = subnet_and_bridge(network);
    let name = format!("devstack-reach-{}", std::process::id());
    let dir = cgroup2_root().join(&name);
    let rule = strings(&[
        "-o",
        &bridge,
        "-d",
        &subnet,
        "-m",
        "cgroup",
        "--path",
        &name,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]);
    let guard = insert(Undo {
        chain: "OUTPUT",
        rule,
        cgroup: Some(dir.clone()),
    });
    (guard, dir)
}

/// Inserts the reverse rule: no container of the network `network` opens a
/// connection to its gateway (the host, as the containers see it).
/// Connections the host opens to them, and their replies, pass; so do
/// connections to the host's other addresses (the default bridge's
/// gateway, where `host.docker.internal` leads).
fn reverse_firewall(network: &str) -> Undoing {
    reverse_rule(network, Some(&gateway(network)))
}

/// Inserts the reverse rule for the whole host: no container of the
/// network `network` opens a connection to any address of this host (its
/// gateway, nor `host.docker.internal`, the default bridge's gateway).
fn reverse_firewall_whole_host(network: &str) -> Undoing {
    reverse_rule(network, None)
}

/// Drops new connections from `network`'s subnet to `to` (an address of
/// this host), or to every address of this host.
fn reverse_rule(network: &str, to: Option<&str>) -> Undoing {
    let (subnet, _) = subnet_and_bridge(network);
    let mut rule = strings(&["-s", &subnet]);
    if let Some(to) = to {
        rule.extend(strings(&["-d", to]));
    }
    rule.extend(strings(&[
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]));
    insert(Undo {
        chain: "INPUT",
        rule,
        cgroup: None,
    })
}

/// The default `bridge` network's IPv4 gateway (where the engine's
/// `host-gateway`, and so `host.docker.internal`, leads on Linux): the one
/// named, else the first address of its subnet, where the engine puts it.
fn default_bridge_gateway() -> String {
    let named = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        "bridge",
    ]);
    if let Some(g) = named.split_whitespace().find(|s| s.contains('.')) {
        return g.to_string();
    }
    let (subnet, _) = subnet_and_bridge("bridge");
    let (base, len) = subnet.split_once('/').expect("a subnet");
    let base: std::net::Ipv4Addr = base.parse().expect("an IPv4 subnet");
    let mask = u32::MAX << (32 - len.parse::<u32>().expect("a prefix length"));
    std::net::Ipv4Addr::from((u32::from(base) & mask) + 1).to_string()
}

/// Whether `container` opens a TCP connection to `ip` (a listener of the
/// test's there), as its python3 says.
fn container_connects(container: &str, ip: &str) -> bool {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("a listener of the test");
    let port = listener.local_addr().unwrap().port();
    let tried = python_in(
        container,
        &format!(
            "import socket\ntry:\n    socket.create_connection(('{ip}', {port}), 2).close(); print('connected')\nexcept Exception as e:\n    print(type(e).__name__)"
        ),
    );
    tried == "connected"
}

/// Whether a TCP connection to `addr` opens within 3 s, tried by a process
/// in `cgroup` (or, `None`, by one outside it).
fn connects(cgroup: Option<&Path>, addr: &str) -> bool {
    let (ip, port) = addr.rsplit_once(':').expect("ip:port");
    let probe =
        format!("import socket; socket.create_connection(('{ip}', {port}), timeout=3).close()");
    let mut cmd = Command::new("sh");
    cmd.arg("-c");
    match cgroup {
        Some(dir) => cmd
            .arg("echo $$ > \"$0/cgroup.procs\" && exec python3 -c \"$1\"")
            .arg(dir)
            .arg(&probe),
        None => cmd.arg("exec python3 -c \"$0\"").arg(&probe),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A container's address on the stack network.
fn address(container: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
}

/// `n` answers in a row from the stack, each "first"; false at the first other.
fn serves_in_a_row(s: &Stack, n: usize) -> bool {
    (0..n).all(|_| message(s.listen).as_deref() == Ok("first"))
}

/// The engine answers and the fixture images the stack uses exist (built,
/// under the lock every test binary shares, when they do not).
fn ready() {
    fixtures::engine_answers();
    let wanted = [
        "devstack-fixtures/haproxy:2.6",
        "devstack-fixtures/debian:bookworm",
    ];
    let missing = || {
        wanted
            .iter()
            .any(|i| docker_ok(&["images", "-q", i]).is_empty())
    };
    if missing() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        fixtures::under_build_lock(|| {
            if missing() {
                fixtures::build(repo, &[]);
            }
        });
    }
}

/// `up --detach --wait --json`: the stack comes up, says its reach and
/// registry once, decided, records both, and answers.
fn up_routed(s: &Stack, reach: &str, registry: &str) {
    let out = s
        .cmd(&["up", "--detach", "--wait", "--json", "--timeout", "180s"])
        .output()
        .expect("devstack up runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "up failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "reach")
        .collect();
    assert_eq!(
        said,
        [
            serde_json::json!({"event": "reach", "reach": reach, "decided": true, "registry": registry})
        ],
        "{stdout}"
    );
    assert_eq!(routing_state(&s.name)["reach"], reach);
    assert_eq!(routing_state(&s.name)["registry"], registry);
    until(Duration::from_secs(30), "the stack answers", || {
        message(s.listen).as_deref() == Ok("first")
    });
}

/// Both replicas answer, within 30 s.
fn both_replicas_serve(s: &Stack, what: &str) {
    let mut hosts = BTreeSet::new();
    until(Duration::from_secs(30), what, || {
        if let Some(h) = hostname(s.listen) {
            hosts.insert(h);
        }
        hosts.len() == 2
    });
}

/// A killed replica: the other one serves alone, and `up` brings it back.
fn survives_a_killed_replica(s: &Stack) {
    docker_ok(&["kill", &format!("{}-web-1", s.name)]);
    until(
        Duration::from_secs(20),
        "the other replica serves alone",
        || serves_in_a_row(s, 10),
    );
    up(s, "first");
    both_replicas_serve(s, "both replicas serve again");
}

/// A routing agent killed and started again beside the running stack
/// decides on the running proxy before its registrar probes anything: the
/// replicas stay registered and served, and the decisions are the same.
fn survives_a_restarted_agent(s: &Stack, reach: &str, registry: &str) {
    let agent = routing_state(&s.name)["pid"]
        .as_u64()
        .expect("the agent's pid")
        .to_string();
    assert!(process::command_ok("kill", &["-9", &agent]));
    up(s, "first");
    assert_eq!(routing_state(&s.name)["reach"], reach);
    assert_eq!(routing_state(&s.name)["registry"], registry);
    assert_ne!(routing_state(&s.name)["pid"].to_string(), agent);
    both_replicas_serve(s, "both replicas serve after the restart");
}

/// A save swaps both replicas, no request fails meanwhile, and the old
/// replicas go (the new ones take the usual names).
fn swaps_without_a_failed_request(s: &mut Stack) {
    let rx = start_watch(s);
    let load = Poll::start(s.listen, Duration::from_millis(20));
    std::fs::write(s.file("message.txt"), "second").unwrap();
    let v = next_event(&rx);
    assert_eq!(v["result"], "swapped", "{v}");
    until(Duration::from_secs(15), "the new version answers", || {
        message(s.listen).as_deref() == Ok("second")
    });
    let answers = load.finish();
    let errors = unexpected(&answers, &["first", "second"]);
    assert!(
        errors.is_empty(),
        "failed requests during the swap ({} answers): {errors:?}",
        answers.len()
    );
    let usual = [format!("{}-web-1", s.name), format!("{}-web-2", s.name)];
    until(Duration::from_secs(30), "the old replicas are gone", || {
        let mut names = web_names(s);
        names.sort();
        names == usual
    });
}

/// The stack network, made by the test so that its subnet is known before
/// devstack runs; the project label makes it the stack's own (devstack
/// adopts it, `down` removes it).
fn make_network(s: &Stack) {
    docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("dev.devstack.project={}", s.name),
        &s.name,
    ]);
}

#[test]
fn a_stack_whose_bridge_devstack_cannot_reach_is_routed_survives_a_kill_and_swaps() {
    let _one = one_at_a_time();
    ready();
    let mut s = Stack::with("r", "    replicas: 2");
    make_network(&s);
    let (_firewall, cgroup) = firewall(&s.name);
    s.cgroup = Some(cgroup.clone());

    // Up, routed, with the decision recorded and said.
    up_routed(&s, "published", "host");

    // The simulation holds: devstack's cgroup cannot open a connection to a
    // container's address, while a process outside it can, and the web
    // replicas publish their probe port on loopback only.
    let web1 = format!("{}-web-1", s.name);
    let target = format!("{}:8080", address(&web1));
    assert!(connects(None, &target), "the test reaches {target}");
    assert!(
        !connects(Some(&cgroup), &target),
        "devstack's cgroup must not reach {target}"
    );
    let published = docker_ok(&["port", &web1, "8080/tcp"]);
    assert!(
        !published.is_empty() && published.lines().all(|l| l.starts_with("127.0.0.1:")),
        "the probe port is published on loopback only: {published:?}"
    );

    // The safety rule holds on this path too: the control port admits the
    // gateway (where the loopback publication's connections come from),
    // never a container of the stack.
    let proxy_ip = address(&format!("{}-proxy", s.name));
    let asked = docker_ok(&[
        "exec",
        &web1,
        "python3",
        "-c",
        &format!(
            "import socket\ngot = b''\ntry:\n    c = socket.create_connection(('{proxy_ip}', 9990), 2)\n    c.settimeout(2)\n    c.sendall(b'show proc\\n')\n    c.shutdown(socket.SHUT_WR)\n    while True:\n        b = c.recv(4096)\n        if not b: break\n        got += b\nexcept Exception as e:\n    got += repr(e).encode()\nprint(repr(got))"
        ),
    ]);
    assert!(
        !asked.contains("master"),
        "a container of the stack reached the master CLI: {asked}"
    );

    survives_a_killed_replica(&s);
    survives_a_restarted_agent(&s, "published", "host");
    swaps_without_a_failed_request(&mut s);
    // The swapped-in replicas publish their probe port on loopback too.
    for name in [format!("{}-web-1", s.name), format!("{}-web-2", s.name)] {
        let published = docker_ok(&["port", &name, "8080/tcp"]);
        assert!(
            published.lines().any(|l| l.starts_with("127.0.0.1:")),
            "{name}: {published:?}"
        );
    }
}

/// What a python3 one-liner run in `container` prints.
fn python_in(container: &str, code: &str) -> String {
    docker_ok(&["exec", container, "python3", "-c", code])
}

/// The gateway-only reverse rule, as where a firewall guards the stack
/// network's gateway: the containers still reach `host.docker.internal`
/// (the default bridge's gateway, another address of this host), so the
/// embedded registry stays in devstack, listening there, and the proxy's
/// `etcd:2379` forward leads to `host.docker.internal`.
#[test]
fn a_stack_whose_containers_reach_only_host_docker_internal_keeps_its_registry_on_the_host() {
    let _one = one_at_a_time();
    ready();
    reaches_only_host_docker_internal(Stack::with("h", "    replicas: 2"));
}

/// The same behind nginx, whose stream `proxy_pass` resolves the name.
#[test]
fn behind_nginx_a_stack_reaching_only_host_docker_internal_keeps_its_registry_on_the_host() {
    let _one = one_at_a_time();
    ready();
    let image = "devstack-fixtures/nginx:1.22";
    assert!(
        !docker_ok(&["images", "-q", image]).is_empty(),
        "{image} is built (`just fixtures`)"
    );
    reaches_only_host_docker_internal(Stack::on("n", "    replicas: 2", "", "nginx"));
}

fn reaches_only_host_docker_internal(s: Stack) {
    make_network(&s);
    let _firewall = reverse_firewall(&s.name);
    let gateway = gateway(&s.name);
    let host_gateway = default_bridge_gateway();

    up_routed(&s, "direct", "host-gateway");
    both_replicas_serve(&s, "both replicas serve");
    // No registry container; devstack's endpoint is its own etcd where
    // `host-gateway` leads.
    let registry = format!("{}-registry", s.name);
    assert!(
        !process::command_ok("docker", &["inspect", &registry]),
        "no {registry} runs"
    );
    let endpoints = routing_state(&s.name)["endpoints"].clone();
    let endpoint = endpoints[0].as_str().expect("an endpoint").to_string();
    assert!(
        endpoint.starts_with(&format!("http://{host_gateway}:")),
        "{endpoints}"
    );

    // The simulation holds: a container of the stack cannot open a
    // connection to the gateway, but can to `host.docker.internal`'s
    // address; and it reaches the registry as `etcd:2379`.
    let web1 = format!("{}-web-1", s.name);
    assert!(
        !container_connects(&web1, &gateway),
        "a container reached the gateway"
    );
    assert!(
        container_connects(&web1, &host_gateway),
        "a container cannot reach {host_gateway}"
    );
    let version = python_in(
        &web1,
        "import urllib.request; print(urllib.request.urlopen('http://etcd:2379/version', timeout=5).read().decode())",
    );
    assert!(version.contains("etcdserver"), "{version}");
    // The proxy resolves the name itself (its `extra_hosts`).
    let proxy = format!("{}-proxy", s.name);
    let hosts = docker_ok(&["exec", &proxy, "cat", "/etc/hosts"]);
    assert!(
        hosts
            .lines()
            .any(|l| l.contains("host.docker.internal") && l.starts_with(&host_gateway)),
        "{hosts}"
    );

    survives_a_killed_replica(&s);
    survives_a_restarted_agent(&s, "direct", "host-gateway");
    // After the restart: the new agent's etcd (on a new port), reached the
    // same way once its router's first apply reloaded the proxy.
    until(
        Duration::from_secs(15),
        "etcd:2379 answers after the restart",
        || {
            let out = run(
                "docker",
                &[
                    "exec",
                    &web1,
                    "python3",
                    "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://etcd:2379/version', timeout=5).read().decode())",
                ],
            );
            String::from_utf8_lossy(&out.stdout).contains("etcdserver")
        },
    );
    let listed = s.cmd(&["etcd", "ls", "/"]).output().expect("etcd ls runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("web"),
        "the registry lists the web replicas: {listed}"
    );

    let down = s.cmd(&["down"]).output().expect("down runs");
    assert!(down.status.success(), "{down:?}");
}

/// The reverse rule for the whole host: the containers reach neither the
/// gateway nor `host.docker.internal`, so the registry runs in the stack.
#[test]
fn a_stack_whose_containers_cannot_reach_devstack_runs_its_registry_in_the_stack() {
    let _one = one_at_a_time();
    ready();
    let mut s = Stack::with("g", "    replicas: 2");
    make_network(&s);
    let _firewall = reverse_firewall_whole_host(&s.name);
    let gateway = gateway(&s.name);

    // Up, routed, with the registry in the stack, recorded and said; the
    // host still reaches the containers at their addresses.
    up_routed(&s, "direct", "stack");
    let registry = format!("{}-registry", s.name);
    assert_eq!(
        docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{index .Config.Labels \"dev.devstack.project\"}} {{index .Config.Labels \"dev.devstack.kind\"}}",
            &registry,
        ]),
        format!("true {} registry", s.name)
    );
    // devstack's endpoint is the registry container's address.
    let endpoints = routing_state(&s.name)["endpoints"].clone();
    assert_eq!(
        endpoints,
        serde_json::json!([format!("http://{}:2379", address(&registry))])
    );

    // The simulation holds: a container of the stack cannot open a
    // connection to the gateway (here, a listener of the test's), nor to
    // `host.docker.internal`'s address, and it reaches the registry as
    // `etcd:2379`, which holds the replicas' registrations.
    let web1 = format!("{}-web-1", s.name);
    assert!(
        !container_connects(&web1, &gateway),
        "a container reached the gateway"
    );
    let host_gateway = default_bridge_gateway();
    assert!(
        !container_connects(&web1, &host_gateway),
        "a container reached {host_gateway}"
    );
    let version = python_in(
        &web1,
        "import urllib.request; print(urllib.request.urlopen('http://etcd:2379/version', timeout=5).read().decode())",
    );
    assert!(version.contains("etcdserver"), "{version}");
    let listed = s.cmd(&["etcd", "ls", "/"]).output().expect("etcd ls runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("web"),
        "the registry lists the web replicas: {listed}"
    );

    survives_a_killed_replica(&s);
    survives_a_restarted_agent(&s, "direct", "stack");
    swaps_without_a_failed_request(&mut s);

    // `down` takes the registry container with the stack.
    let down = s.cmd(&["down"]).output().expect("down runs");
    assert!(down.status.success(), "{down:?}");
    assert!(
        !process::command_ok("docker", &["inspect", &registry]),
        "`down` removed {registry}"
    );
}

/// Both ways cut at once: devstack reaches the stack only through ports
/// published on 127.0.0.1 (as on Docker Desktop), and its containers reach
/// no address of this host, neither the gateway nor `host.docker.internal`,
/// so the registry runs in the stack and devstack reaches it on its
/// loopback publication.
#[test]
fn a_stack_cut_off_both_ways_reaches_its_registry_on_loopback() {
    let _one = one_at_a_time();
    ready();
    let mut s = Stack::with("b", "    replicas: 2");
    make_network(&s);
    let (_firewall, cgroup) = firewall(&s.name);
    let _reverse = reverse_firewall_whole_host(&s.name);
    s.cgroup = Some(cgroup.clone());

    up_routed(&s, "published", "stack");
    let registry = format!("{}-registry", s.name);
    let published = docker_ok(&["port", &registry, "2379/tcp"]);
    assert!(
        !published.is_empty() && published.lines().all(|l| l.starts_with("127.0.0.1:")),
        "the registry is published on loopback only: {published:?}"
    );
    assert_eq!(
        routing_state(&s.name)["endpoints"],
        serde_json::json!([format!("http://{}", published.lines().next().unwrap())])
    );
    let target = format!("{}:2379", address(&registry));
    assert!(
        !connects(Some(&cgroup), &target),
        "devstack's cgroup must not reach {target}"
    );

    survives_a_killed_replica(&s);
    swaps_without_a_failed_request(&mut s);
}
