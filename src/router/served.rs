//! Whether the proxy serves a stack's routes: one request per route through
//! the proxy's listen address, told apart from the answers HAProxy makes up
//! itself when no instance is behind a route. "Up" means routed: `up` waits
//! on this before it prints a route's URL or returns.
//!
//! The check asks the proxy, not the registry or Docker, so it holds for the
//! built-in template and for a stack's own one alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::spec::{Route, Stack};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of an answer that is read: the status line and the start of
/// the body are all the check needs.
const READ_LIMIT: usize = 8 * 1024;
/// A wildcard label (`*.demo.localhost`) is asked for as this name.
const WILDCARD_LABEL: &str = "devstack-check";

/// One route of one service, as a user reaches it through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub service: String,
    /// What the user types: `http://api.demo.localhost:8080/v1`.
    pub url: String,
    /// Where the request is sent (the listen address; a wildcard listen
    /// address is asked on loopback).
    addr: SocketAddr,
    /// The `Host` header.
    host: String,
    /// The request path.
    path: String,
}

/// The routes of `services` (every service when empty), in stack order.
pub fn targets(stack: &Stack, services: &[String]) -> Vec<RouteTarget> {
    stack
        .services
        .iter()
        .filter(|(name, _)| services.is_empty() || services.contains(name))
        .flat_map(|(name, service)| {
            service
                .routes
                .iter()
                .map(|r| target(stack.proxy.listen, name, r))
        })
        .collect()
}

/// The URLs the proxy serves a service's routes on.
pub fn urls(stack: &Stack, service: &str) -> Vec<String> {
    targets(stack, &[service.to_string()])
        .into_iter()
        .map(|t| t.url)
        .collect()
}

fn target(listen: SocketAddr, service: &str, route: &Route) -> RouteTarget {
    let port = if listen.port() == 80 {
        String::new()
    } else {
        format!(":{}", listen.port())
    };
    let shown_host = route.host.clone().unwrap_or_else(|| match listen.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    });
    let path = route.path.clone().unwrap_or_else(|| "/".into());
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    RouteTarget {
        service: service.to_string(),
        url: format!("http://{shown_host}{port}{path}"),
        addr: SocketAddr::new(ip, listen.port()),
        host: shown_host.replace('*', WILDCARD_LABEL),
        path,
    }
}

impl RouteTarget {
    /// The same request, sent to `addr` instead of the listen address: a
    /// tunnel into the proxy container (its port 80) when the stack is
    /// reached only through `docker exec`, whose engine's listen address
    /// is not this host's.
    pub fn via(self, addr: SocketAddr) -> RouteTarget {
        RouteTarget { addr, ..self }
    }
}

/// What one request through the proxy showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The application behind the route answered (any status it chose).
    Served,
    /// The proxy answered for it, or nothing answered: why.
    NotServed(String),
}

/// Sends one request for `target` through the proxy.
pub async fn ask(target: &RouteTarget) -> Answer {
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(target)).await {
        Ok(Ok(text)) => classify(&text),
        Ok(Err(e)) => {
            Answer::NotServed(format!("the proxy at {} did not answer: {e}", target.addr))
        }
        Err(_) => Answer::NotServed(format!(
            "no answer through the proxy within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn exchange(target: &RouteTarget) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(target.addr).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: devstack-route-check\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while buf.len() < READ_LIMIT {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Tells the application's answer from the proxy's own: the built-in
/// templates' `devstack: no instance ...` / `devstack: no route ...`
/// answers, and HAProxy's stock 503 ("No server is available") or nginx's
/// stock 502/504 pages, which a stack's own template gives for a backend
/// with no server up.
pub fn classify(response: &str) -> Answer {
    let Some(status_line) = response.lines().next().filter(|l| l.starts_with("HTTP/")) else {
        return Answer::NotServed("the proxy closed the connection without an answer".into());
    };
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let proxy_made = body.starts_with("devstack: no instance of")
        || body.starts_with("devstack: no route of")
        || (matches!(status, 502..=504)
            && (body.contains("No server is available to handle this request")
                || body.contains("The server didn't respond in time")
                || body.contains("The server returned an invalid or incomplete response")
                // nginx's stock pages (`<hr><center>nginx/1.27.0</center>`).
                || body.contains("<hr><center>nginx")));
    if proxy_made {
        let reason = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Answer::NotServed(format!(
            "the proxy answered {status} itself{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", reason.trim())
            }
        ))
    } else {
        Answer::Served
    }
}

/// Asks every target until each has been served once or `deadline`
/// passes. Returns the targets never served, each with its last reason.
pub async fn wait_served(targets: &[RouteTarget], deadline: Instant) -> Vec<(RouteTarget, String)> {
    let mut pending: Vec<(RouteTarget, String)> = targets
        .iter()
        .map(|t| (t.clone(), "not asked yet".to_string()))
        .collect();
    loop {
        let answers = futures::future::join_all(pending.iter().map(|(t, _)| ask(t))).await;
        let mut still = Vec::new();
        for ((target, _), answer) in pending.into_iter().zip(answers) {
            if let Answer::NotServed(why) = answer {
                still.push((target, why));
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(response: &str, served: bool) {
        let answer = classify(response);
        assert_eq!(
            matches!(answer, Answer::Served),
            served,
            "{response:?} gave {answer:?}"
        );
    }

    #[test]
    fn application_answers_count_whatever_their_status() {
        check("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true);
        check("HTTP/1.1 404 Not Found\r\n\r\nnot here", true);
        // An application's own 503 is its answer: only the proxy's are not.
        check("HTTP/1.1 503 Service Unavailable\r\n\r\nmaintenance", true);
        check("HTTP/1.0 301 Moved\r\nlocation: /x\r\n\r\n", true);
    }

    #[test]
    fn the_proxys_own_answers_do_not_count() {
        check(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\r\ndevstack: no instance of web is up",
            false,
        );
        check(
            "HTTP/1.1 404 Not Found\r\n\r\ndevstack: no route of demo matches this host and path",
            false,
        );
        check(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n",
            false,
        );
        check(
            "HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n\r\n<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
            false,
        );
        check("", false);
        check("garbage", false);
    }

    #[test]
    fn targets_follow_the_listen_address_and_hosts() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let route = Route {
            host: Some("*.demo.localhost".into()),
            path: Some("/v1".into()),
            strip_prefix: false,
            port: 80,
        };
        let t = target(listen, "api", &route);
        assert_eq!(t.url, "http://*.demo.localhost:8080/v1");
        assert_eq!(t.host, "devstack-check.demo.localhost");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/v1");

        let path_only = Route {
            host: None,
            path: None,
            strip_prefix: false,
            port: 80,
        };
        let t = target("127.0.0.1:80".parse().unwrap(), "web", &path_only);
        assert_eq!(t.url, "http://127.0.0.1/");
        assert_eq!(t.host, "127.0.0.1");
    }
}
