//! The text form of `devstack doctor`'s report (`engine::doctor::Report`),
//! one finding per line.

use crate::engine::doctor::{human_bytes, Report};

/// The text report, one line per entry.
pub fn render(r: &Report) -> Vec<String> {
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let mut lines = Vec::new();
    lines.push(format!(
        "engine   {} ({}) · Docker {} · API {} (negotiated {})",
        r.endpoint,
        r.endpoint_kind,
        or_unknown(&r.engine_version),
        or_unknown(&r.api_version),
        r.api_negotiated
    ));
    let mut kind = vec![if r.rootless { "rootless" } else { "rootful" }];
    if r.docker_desktop {
        kind.push("Docker Desktop");
    }
    lines.push(format!(
        "system   {} · {}/{} · kernel {} · {}",
        or_unknown(&r.operating_system),
        or_unknown(&r.os_type),
        or_unknown(&r.arch),
        or_unknown(&r.kernel),
        kind.join(" · ")
    ));
    let disk = match (&r.docker_root_dir, r.free_disk_bytes) {
        (Some(dir), Some(free)) => format!("{dir}: {} free", human_bytes(free)),
        (Some(dir), None) => format!("{dir} (not on this host)"),
        (None, _) => "data directory unknown".into(),
    };
    lines.push(format!(
        "storage  {} · cgroup {} v{} · {disk}",
        or_unknown(&r.storage_driver),
        or_unknown(&r.cgroup_driver),
        or_unknown(&r.cgroup_version),
    ));
    lines.push(match r.clock_skew_seconds {
        Some(s) => format!("clock    engine {s:+.0}s from this host"),
        None => "clock    the engine did not say its time".into(),
    });
    lines.push(match (&r.probe_image, r.stack_reach) {
        (Some(image), Some(reach)) => {
            format!(
                "reach    probed with {image} · a stack is reached through {}{}",
                reach.describe(),
                r.stack_registry
                    .map(|g| format!(" · its registry runs {}", g.describe()))
                    .unwrap_or_default()
            )
        }
        (Some(image), None) => format!("reach    probed with {image}"),
        (None, _) => "reach    not probed".into(),
    });
    for p in &r.reach {
        lines.push(format!(
            "  {:<4} {}{} ({})",
            if p.works { "ok" } else { "FAIL" },
            p.path.describe(),
            if p.used_today { ", used today" } else { "" },
            p.detail
        ));
    }
    for problem in &r.problems {
        lines.push(format!("problem  {problem}"));
    }
    lines.push(if r.ok {
        "everything devstack needs works".into()
    } else {
        "devstack will not work fully on this engine (see the problems above)".into()
    });
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::doctor::{Path, Reach};

    fn report() -> Report {
        Report {
            endpoint: "unix:///var/run/docker.sock".into(),
            endpoint_kind: "unix".into(),
            engine_version: Some("28.1.1".into()),
            api_version: Some("1.49".into()),
            api_negotiated: "1.49".into(),
            os_type: Some("linux".into()),
            arch: Some("x86_64".into()),
            operating_system: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel: Some("6.1.0".into()),
            docker_desktop: false,
            rootless: false,
            storage_driver: Some("overlay2".into()),
            cgroup_driver: Some("systemd".into()),
            cgroup_version: Some("2".into()),
            clock_skew_seconds: Some(0.0),
            docker_root_dir: Some("/var/lib/docker".into()),
            free_disk_bytes: Some(10 * 1024 * 1024 * 1024),
            probe_image: Some("busybox:latest".into()),
            reach: Path::ALL
                .iter()
                .map(|&path| Reach {
                    path,
                    works: path != Path::ContainerToHostDockerInternal,
                    used_today: path.used_today(),
                    detail: "addr".into(),
                })
                .collect(),
            stack_reach: Some(crate::engine::reach::Reach::Direct),
            stack_registry: Some(crate::engine::reach::Registry::Host),
            problems: vec!["containers cannot reach host.docker.internal".into()],
            ok: true,
        }
    }

    #[test]
    fn the_text_report_says_each_finding_on_its_line() {
        assert_eq!(
            render(&report()),
            [
                "engine   unix:///var/run/docker.sock (unix) · Docker 28.1.1 · API 1.49 (negotiated 1.49)",
                "system   Debian GNU/Linux 12 (bookworm) · linux/x86_64 · kernel 6.1.0 · rootful",
                "storage  overlay2 · cgroup systemd v2 · /var/lib/docker: 10.0 GiB free",
                "clock    engine +0s from this host",
                "reach    probed with busybox:latest · a stack is reached through containers' addresses on the stack network · its registry runs on this host, at the stack network's gateway",
                "  ok   host → container bridge address, used today (addr)",
                "  ok   host → port published on 127.0.0.1 (addr)",
                "  ok   container → host at the bridge gateway, used today (addr)",
                "  FAIL container → host.docker.internal (addr)",
                "problem  containers cannot reach host.docker.internal",
                "everything devstack needs works",
            ]
        );
    }

    #[test]
    fn a_remote_rootless_engine_without_a_probe_says_so() {
        let mut r = report();
        r.endpoint = "ssh://me@box".into();
        r.endpoint_kind = "ssh".into();
        r.rootless = true;
        r.free_disk_bytes = None;
        r.clock_skew_seconds = Some(-12.0);
        r.probe_image = None;
        r.reach.clear();
        r.ok = false;
        let lines = render(&r);
        assert!(lines[1].ends_with("rootless"), "{lines:?}");
        assert_eq!(
            lines[2],
            "storage  overlay2 · cgroup systemd v2 · /var/lib/docker (not on this host)"
        );
        assert_eq!(lines[3], "clock    engine -12s from this host");
        assert_eq!(lines[4], "reach    not probed");
        assert!(lines
            .last()
            .unwrap()
            .starts_with("devstack will not work fully"));
    }
}
