//! Only devstack drives the proxy: a container of the stack reaches none of
//! the proxy's ports with the master CLI behind it, while devstack's own
//! commands, reloads and runtime updates go through. On nginx, whose
//! control port can change nothing, a container does not even read it.

use std::time::Duration;

use devstack::engine::nginx::read_control;
use devstack::engine::proxy::master_cli;
use devstack::router::confd::reload;
use devstack::spec::ProxyKind;

use crate::support::*;

const SERVICES: &str = "  a:
    image: devstack-fixtures/app
    port: 8080
    env: { SERVICE: a }
    health: { http: /health, interval: 500ms, start_period: 20s }
    restart: \"no\"
    stop_grace: 1s
    routes: [a.test.localhost]
";

/// Run from a container on the stack network: connects to every port given,
/// sends `show proc` (and a runtime command) as devstack would, and prints
/// one line per port: `<port> <what came back, escaped>`.
const PROBE: &str = r#"
import socket, sys
ip = sys.argv[1]
for port in sys.argv[2:]:
    got = b""
    try:
        s = socket.create_connection((ip, int(port)), 2)
        s.settimeout(2)
        s.sendall(b"show proc\n@1 show servers state\n")
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except Exception as e:
        got += ("<%s>" % type(e).__name__).encode()
    print(port, repr(got[:300]))
"#;

/// [`PROBE`] run in a one-off container on the stack network of `project`
/// against `ports` of the proxy at `ip`: its report, one line per port.
fn probe_from_the_stack(project: &str, ip: &str, ports: &[u16]) -> String {
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--label".into(),
        format!("dev.devstack.project={project}"),
        "--network".into(),
        project.to_string(),
        "devstack-fixtures/app".into(),
        "python3".into(),
        "-c".into(),
        PROBE.into(),
        ip.to_string(),
    ];
    args.extend(ports.iter().map(|p| p.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
}

/// The TCP ports the proxy container listens on, on any address.
fn listening_ports(container: &str) -> Vec<u16> {
    let table = docker(&["exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6"]);
    let mut ports: Vec<u16> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            (f.get(3) == Some(&"0A"))
                .then(|| f.get(1)?.rsplit_once(':'))
                .flatten()
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[test]
fn no_container_of_the_stack_reaches_the_master_cli() {
    run(Duration::from_secs(120), async {
        let p = Project::new("control", SERVICES, "");
        let routing = p.up_routed().await;
        let proxy = routing.router.proxy.clone();
        let ip = proxy.ip.expect("the proxy has an address").to_string();
        until(
            Duration::from_secs(20),
            "a answers through the proxy",
            || async { matches!(get(p.listen, "a.test.localhost", "/").await, Ok((200, _))) },
        )
        .await;

        // Every port the proxy listens on (its routes, etcd, the control
        // port, the master CLI itself), tried from a container of the stack.
        let ports = listening_ports(&proxy.name);
        assert!(ports.contains(&80) && ports.len() >= 3, "{ports:?}");
        let report = probe_from_the_stack(&p.name, &ip, &ports);
        assert_eq!(report.lines().count(), ports.len(), "{report}");
        for line in report.lines() {
            assert!(
                !line.contains("master") && !line.contains("be_name"),
                "a container of the stack drove the proxy: {line}\n{report}"
            );
        }

        // devstack still does: commands, a reload, a runtime update.
        let answer = master_cli(proxy.cli, "show proc").await.expect("show proc");
        assert!(answer.contains("master"), "{answer}");
        reload(proxy.cli)
            .await
            .expect("a reload through the control port");
        let state = master_cli(proxy.cli, "@1 show servers state svc_a")
            .await
            .expect("the runtime API");
        assert!(state.contains("svc_a"), "{state}");
        assert!(matches!(
            get(p.listen, "a.test.localhost", "/").await,
            Ok((200, _))
        ));
        routing.shutdown().await;
    });
}

#[test]
fn no_container_of_the_stack_reads_nginx_control_port() {
    run(Duration::from_secs(120), async {
        let p = Project::on(ProxyKind::Nginx, "ngcontrol", SERVICES, "", &[]);
        let routing = p.up_routed().await;
        let proxy = routing.router.proxy.clone();
        let ip = proxy.ip.expect("the proxy has an address").to_string();
        until(
            Duration::from_secs(20),
            "a answers through the proxy",
            || async { matches!(get(p.listen, "a.test.localhost", "/").await, Ok((200, _))) },
        )
        .await;
        // Its routes, etcd's forward and the control port.
        let ports = listening_ports(&proxy.name);
        assert!(
            ports.contains(&80) && ports.contains(&9990) && ports.contains(&2379),
            "{ports:?}"
        );
        let report = probe_from_the_stack(&p.name, &ip, &ports);
        assert_eq!(report.lines().count(), ports.len(), "{report}");
        for line in report.lines() {
            assert!(
                !line.contains("devstack-nginx") && !line.contains("svc_a"),
                "a container of the stack read the control port: {line}\n{report}"
            );
        }
        // devstack does: the table names a's instance.
        let answer = read_control(proxy.cli).await.expect("the control port");
        assert!(
            answer
                .servers
                .iter()
                .any(|s| s.backend == "svc_a" && s.serving()),
            "{answer:?}"
        );
        routing.shutdown().await;
    });
}
