//! TCP through `docker exec`, for a stack reached only by exec (a remote
//! engine, see [`super::reach::Reach::Exec`]): the proxy's control port and
//! the registry in the stack are TCP ports, and this process has no TCP way
//! to the engine's containers.
//!
//! A tunnel is a listener on this host's `127.0.0.1`, on a port the system
//! picks, owned by this process. Each connection it accepts starts one exec
//! in the chosen container, attached (stdin and stdout), running a relay
//! that connects to a port on the container's own loopback and copies bytes
//! both ways: the socket's bytes go to the exec's stdin, the exec's stdout
//! to the socket (its stderr is dropped). The connection ends
//! when the relay does (the far side closed); a client that closes first
//! closes the relay's stdin, which closes the far side's writing half.
//!
//! The relay, [`Relay`]: this devstack binary (`devstack relay ADDR`) where
//! it is in the container (the registry's), else a script of whichever tool
//! the image has, python3 or bash's `/dev/tcp` (the proxy's).
//!
//! A connection from a relay arrives at the target from the container's
//! loopback (`127.0.0.1`), which no other container can forge (Linux drops
//! loopback sources arriving on any other interface): the proxy's control
//! port admits it beside the network's gateway.
//!
//! Tunnels are made once per container and port and live as long as this
//! process; one whose container is gone stops at its next connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::error::is_not_found;
use super::{Engine, EngineError};

/// What runs in the container to carry one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relay {
    /// A devstack binary at this path in the container: `PATH relay ADDR`.
    Binary(String),
    /// A shell script of python3, else bash's `/dev/tcp` with `cat`.
    Shell,
}

impl Relay {
    /// The exec's command line for a connection to `target`.
    pub fn argv(&self, target: SocketAddr) -> Vec<String> {
        match self {
            Relay::Binary(path) => vec![path.clone(), "relay".into(), target.to_string()],
            Relay::Shell => vec!["sh".into(), "-c".into(), shell_script(target)],
        }
    }
}

/// The relay script: python3 (both directions, the writing half closed on
/// stdin's end), else bash's `/dev/tcp` (which cannot close half a socket:
/// enough for request/answer protocols whose server closes, as the proxies'
/// control ports do; stdin goes through fd 4, since an asynchronous
/// command's own stdin is /dev/null). 127: neither is in the image.
fn shell_script(target: SocketAddr) -> String {
    let (ip, port) = (target.ip(), target.port());
    format!(
        "if command -v python3 >/dev/null 2>&1; then exec python3 -c '
import os, socket, sys, threading
s = socket.create_connection((\"{ip}\", {port}), 5)
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        s.sendall(b)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=up, daemon=True).start()
out = sys.stdout.buffer
while True:
    b = s.recv(65536)
    if not b:
        break
    out.write(b)
    out.flush()
'; elif command -v bash >/dev/null 2>&1 && command -v cat >/dev/null 2>&1; then exec bash -c 'exec 3<>/dev/tcp/{ip}/{port} 4<&0 || exit 1; cat <&4 >&3 & p=$!; cat <&3; kill $p 2>/dev/null'; \
         else echo 'no python3 or bash in the image to relay with' >&2; exit 127; fi"
    )
}

/// The tunnels this process made: (container, target) → local address.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tunnels(Arc<Mutex<HashMap<(String, SocketAddr), SocketAddr>>>);

impl Tunnels {
    fn get(&self, key: &(String, SocketAddr)) -> Option<SocketAddr> {
        self.0.lock().ok()?.get(key).copied()
    }

    fn put(&self, key: (String, SocketAddr), local: SocketAddr) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, local);
        }
    }

    fn forget(&self, key: &(String, SocketAddr)) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }
}

impl Engine {
    /// A local address (`127.0.0.1`, this process's) whose connections are
    /// carried to `target` as seen from inside the running container
    /// `container` (an id or a name), each by one exec of `relay`. Made once
    /// per container and target; later calls return the same address.
    pub async fn tunnel(
        &self,
        container: &str,
        target: SocketAddr,
        relay: Relay,
    ) -> Result<SocketAddr, EngineError> {
        let key = (container.to_string(), target);
        if let Some(local) = self.tunnels.get(&key) {
            return Ok(local);
        }
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .and_then(|l| Ok((l.local_addr()?, l)));
        let (local, listener) = listener.map_err(|e| EngineError::Api {
            what: format!("tunnelling to {target} in `{container}`"),
            message: format!("cannot listen on 127.0.0.1: {e}"),
        })?;
        self.tunnels.put(key.clone(), local);
        let engine = self.clone();
        let argv = relay.argv(target);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                let (engine, argv, key) = (engine.clone(), argv.clone(), key.clone());
                tokio::spawn(async move {
                    if let Err(gone) = engine.carry(&key.0, &argv, socket).await {
                        if gone {
                            engine.tunnels.forget(&key);
                        }
                    }
                });
            }
        });
        Ok(local)
    }

    /// Carries one accepted connection through one exec of `argv`.
    /// `Err(true)`: the container is gone (the tunnel is no use any more).
    async fn carry(&self, container: &str, argv: &[String], socket: TcpStream) -> Result<(), bool> {
        let created = match self.create_exec(container, argv, true, false).await {
            Ok(c) => c,
            Err(_) => {
                let gone = matches!(
                    self.docker.inspect_container(container, None).await,
                    Err(ref e) if is_not_found(e)
                );
                return Err(gone);
            }
        };
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|_| false)?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Err(false);
        };
        let (mut from_client, mut to_client) = socket.into_split();
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from_client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            // The client is done writing: the relay's stdin ends, and it
            // closes the far side's writing half.
            let _ = input.shutdown().await;
        };
        let down = async {
            while let Some(Ok(chunk)) = output.next().await {
                if let LogOutput::StdOut { message } = chunk {
                    if to_client.write_all(&message).await.is_err() {
                        break;
                    }
                }
            }
            let _ = to_client.shutdown().await;
        };
        tokio::pin!(up);
        tokio::pin!(down);
        tokio::select! {
            _ = &mut down => {}
            _ = &mut up => down.await,
        }
        Ok(())
    }
}

/// `devstack relay ADDR`: connects to `addr` and copies stdin to the socket
/// and the socket to stdout (flushed as it comes), until the far side
/// closes; stdin's end closes the socket's writing half. Run inside a
/// container by a tunnel, as the relay of one connection.
pub fn relay(addr: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    let socket =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = socket.set_nodelay(true);
    let mut up = socket
        .try_clone()
        .map_err(|e| format!("cannot share the socket to {addr}: {e}"))?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = socket;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                // Stdout is line-buffered: flush every chunk, binary or not.
                if stdout.write_all(&buf[..n]).and(stdout.flush()).is_err() {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::process::{Command, Stdio};

    use super::*;

    /// A server that reads until its client closes its writing half, then
    /// answers everything it read, uppercased, and closes.
    fn upper_on_eof() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got.to_ascii_uppercase()).unwrap();
        });
        addr
    }

    /// A server that answers one line and closes (as the proxies' control
    /// ports do), whatever the client does with its writing half.
    fn answers_a_line() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8];
            while s.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            s.write_all(b"answer to ").unwrap();
            s.write_all(&line).unwrap();
        });
        addr
    }

    /// The relay script, run here by `sh` with `path` as its PATH.
    fn script(target: SocketAddr, path: &str) -> std::process::Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(Relay::Shell.argv(target)[2].clone())
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn has(program: &str) -> bool {
        Command::new("/bin/sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn the_python_relay_carries_both_ways_and_closes_half_on_stdins_end() {
        assert!(has("python3"), "python3 is needed here");
        let mut relay = script(upper_on_eof(), &std::env::var("PATH").unwrap());
        let mut stdin = relay.stdin.take().unwrap();
        stdin.write_all(b"show proc\n").unwrap();
        drop(stdin);
        let out = relay.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"SHOW PROC\n");
    }

    #[test]
    fn the_bash_relay_serves_where_python_is_missing() {
        // A PATH of bash and cat only.
        let dir = tempfile::tempdir().unwrap();
        for program in ["bash", "cat"] {
            let found = Command::new("/bin/sh")
                .args(["-c", &format!("command -v {program}")])
                .output()
                .unwrap();
            let at = String::from_utf8_lossy(&found.stdout).trim().to_string();
            assert!(!at.is_empty(), "{program} is needed here");
            std::os::unix::fs::symlink(at, dir.path().join(program)).unwrap();
        }
        let path = dir.path().to_string_lossy().into_owned();
        let mut relay = script(answers_a_line(), &path);
        let mut stdin = relay.stdin.take().unwrap();
        stdin.write_all(b"show proc\n").unwrap();
        // Stdin stays open: the server's close ends the relay.
        let mut stdout = relay.stdout.take().unwrap();
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"answer to show proc");
        assert!(relay.wait().unwrap().success());
        drop(stdin);

        // Neither tool: 127, said on stderr.
        let empty = tempfile::tempdir().unwrap();
        let relay = script(answers_a_line(), &empty.path().to_string_lossy());
        let out = relay.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no python3 or bash"));
    }

    #[test]
    fn a_binary_relay_is_this_programs_relay_subcommand() {
        let argv = Relay::Binary("/usr/local/bin/devstack-registry".into())
            .argv("127.0.0.1:2379".parse().unwrap());
        assert_eq!(
            argv,
            [
                "/usr/local/bin/devstack-registry",
                "relay",
                "127.0.0.1:2379"
            ]
        );
    }
}
