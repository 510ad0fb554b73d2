//! Commands in containers: captured (for health probes), attached to the
//! terminal (for `exec`), and one-off task containers (for `run`, for a
//! `before` task, and streamed for `devstack test`'s test suite).

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecResults, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{AttachContainerOptions, ResizeExecOptions, WaitContainerOptions};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::message_of;
use super::{Engine, EngineError};
use crate::plan::ContainerSpec;

/// The outcome of a captured command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// `None` when the command did not finish within its timeout.
    pub exit_code: Option<i64>,
    /// stdout and stderr, interleaved as they came, capped at a few KiB.
    pub output: String,
}

/// How to attach a command to this process's terminal.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Allocate a TTY (stdin is a terminal): raw bytes, one stream.
    pub tty: bool,
    /// Forward this process's stdin.
    pub stdin: bool,
    /// Terminal size (columns, rows), when there is one.
    pub size: Option<(u16, u16)>,
}

/// The most output a probe keeps.
const CAPTURE_LIMIT: usize = 4096;

impl Engine {
    /// Creates (does not start) an exec of `argv` in container `id`, its
    /// output attached, stdin and a TTY as asked.
    pub(super) async fn create_exec(
        &self,
        id: &str,
        argv: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<CreateExecResults, EngineError> {
        self.docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    cmd: Some(argv.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| EngineError::api(format!("running `{}` in `{id}`", argv.join(" ")), e))
    }

    /// Runs `argv` in a running container and captures its output, giving up
    /// after `timeout` (the process is then left to the engine to reap).
    pub async fn exec_capture(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, EngineError> {
        let what = || format!("running `{}` in `{id}`", argv.join(" "));
        let created = self.create_exec(id, argv, false, false).await?;
        let run = async {
            let mut output = String::new();
            match self.docker.start_exec(&created.id, None).await {
                Ok(StartExecResults::Attached {
                    output: mut stream, ..
                }) => {
                    while let Some(Ok(chunk)) = stream.next().await {
                        if output.len() < CAPTURE_LIMIT {
                            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                        }
                    }
                }
                Ok(StartExecResults::Detached) => {}
                Err(e) => return Err(EngineError::api(what(), e)),
            }
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| EngineError::api(what(), e))?;
            Ok(ExecOutput {
                exit_code: inspect.exit_code,
                output,
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Ok(ExecOutput {
                exit_code: None,
                output: format!("timed out after {}ms", timeout.as_millis()),
            }),
        }
    }

    /// Runs `argv` in a container attached to this process's stdin, stdout and
    /// stderr, and returns its exit code.
    pub async fn exec_attached(
        &self,
        id: &str,
        argv: &[String],
        attach: Attach,
    ) -> Result<i64, EngineError> {
        let what = || format!("running `{}` in `{id}`", argv.join(" "));
        let created = self.create_exec(id, argv, attach.stdin, attach.tty).await?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: attach.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| EngineError::api(what(), e))?;
        if let (true, Some((w, h))) = (attach.tty, attach.size) {
            let _ = self
                .docker
                .resize_exec(
                    &created.id,
                    ResizeExecOptions {
                        w: i32::from(w),
                        h: i32::from(h),
                    },
                )
                .await;
        }
        if let StartExecResults::Attached { output, input } = started {
            pump(output, input, attach.stdin).await;
        }
        // The output ends when the process does; its exit code may take a
        // moment to be recorded.
        for _ in 0..50 {
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| EngineError::api(what(), e))?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(0)
    }

    /// Creates a one-off container from `spec`, attaches to it, starts it,
    /// waits for it to exit and removes it; returns its exit code.
    pub async fn run_attached(
        &self,
        spec: &ContainerSpec,
        attach: Attach,
    ) -> Result<i64, EngineError> {
        let mut body = super::containers::create_body(spec);
        body.tty = Some(attach.tty);
        body.open_stdin = Some(attach.stdin);
        body.stdin_once = Some(attach.stdin);
        body.attach_stdin = Some(attach.stdin);
        body.attach_stdout = Some(true);
        body.attach_stderr = Some(true);
        body.hostname = None;
        let id = self.create_one_off(spec, body).await?;
        let result = self.run_created(&id, spec, attach).await;
        let _ = self.remove_with_volumes(&id).await;
        result
    }

    async fn run_created(
        &self,
        id: &str,
        spec: &ContainerSpec,
        attach: Attach,
    ) -> Result<i64, EngineError> {
        let what = || format!("running `{}`", spec.name);
        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stream: true,
                    stdin: attach.stdin,
                    stdout: true,
                    stderr: true,
                    logs: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| EngineError::api(what(), e))?;
        self.start(id, &spec.service).await?;
        pump(attached.output, attached.input, attach.stdin).await;
        Ok(self.wait_exit(id, what).await?.unwrap_or(0))
    }

    /// Waits until a container is no longer running; its exit code (at once
    /// for one that already stopped), `None` if the engine gave none. `what`
    /// names the wait in an error.
    pub async fn wait_exit(
        &self,
        id: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Option<i64>, EngineError> {
        let mut wait = Box::pin(self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        ));
        match wait.next().await {
            Some(Ok(r)) => Ok(Some(r.status_code)),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                Ok(Some(code))
            }
            Some(Err(e)) => Err(EngineError::Api {
                what: what(),
                message: message_of(&e),
            }),
            None => Ok(None),
        }
    }
}

/// Copies the container's output to our stdout/stderr and (optionally) our
/// stdin to the container, until the output ends.
async fn pump(
    mut output: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    mut input: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    forward_stdin: bool,
) {
    if forward_stdin {
        // A plain thread, not tokio's stdin: a blocking read cannot be
        // cancelled, and tokio would wait for it at shutdown.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            // End of our stdin: close the container's, so `cat` and friends finish.
            let _ = input.shutdown().await;
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(Ok(chunk)) = output.next().await {
        let result = match chunk {
            LogOutput::StdErr { message } => {
                stderr.write_all(&message).await.and(stderr.flush().await)
            }
            other => stdout
                .write_all(&other.into_bytes())
                .await
                .and(stdout.flush().await),
        };
        // A closed stdout (`| head`) is not an error; stop copying.
        if result.is_err() {
            break;
        }
    }
}

impl Engine {
    /// Runs a one-off container to completion without a terminal (a task that
    /// must succeed before a unit starts); returns its exit code and last
    /// output lines, and removes it.
    pub async fn run_detached(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(i64, Vec<String>), EngineError> {
        let mut body = super::containers::create_body(spec);
        body.hostname = None;
        let id = self.create_one_off(spec, body).await?;
        let result = async {
            self.start(&id, &spec.service).await?;
            let code = self
                .wait_exit(&id, || format!("waiting for `{}`", spec.name))
                .await?
                .unwrap_or(-1);
            Ok((code, self.last_lines(&id, 20).await))
        }
        .await;
        let _ = self.remove_with_volumes(&id).await;
        result
    }
}

impl Engine {
    /// Runs a one-off container to completion without a terminal, its
    /// output handed to `each` as it comes (`true` for stderr): the task
    /// form of `devstack test`. Once `stop` resolves the container is
    /// stopped (SIGTERM, then SIGKILL after its `stop_grace`) and its last
    /// output still read. Removed at the end; returns its exit code.
    pub async fn run_streamed(
        &self,
        spec: &ContainerSpec,
        stop: impl std::future::Future<Output = ()>,
        mut each: impl FnMut(bool, &[u8]),
    ) -> Result<i64, EngineError> {
        let mut body = super::containers::create_body(spec);
        body.attach_stdout = Some(true);
        body.attach_stderr = Some(true);
        body.hostname = None;
        let id = self.create_one_off(spec, body).await?;
        let what = || format!("running `{}`", spec.name);
        let result = async {
            let attached = self
                .docker
                .attach_container(
                    &id,
                    Some(AttachContainerOptions {
                        stream: true,
                        stdout: true,
                        stderr: true,
                        logs: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| EngineError::api(what(), e))?;
            self.start(&id, &spec.service).await?;
            let mut output = attached.output;
            tokio::pin!(stop);
            let mut stopped = false;
            loop {
                tokio::select! {
                    chunk = output.next() => match chunk {
                        Some(Ok(LogOutput::StdErr { message })) => each(true, &message),
                        Some(Ok(other)) => each(false, &other.into_bytes()),
                        Some(Err(_)) | None => break,
                    },
                    _ = &mut stop, if !stopped => {
                        stopped = true;
                        self.stop(&id, Some(spec.stop_grace)).await?;
                    },
                }
            }
            Ok(self.wait_exit(&id, what).await?.unwrap_or(-1))
        }
        .await;
        let _ = self.remove_with_volumes(&id).await;
        result
    }

    /// Creates a one-off container under the spec's name and returns its id.
    async fn create_one_off(
        &self,
        spec: &ContainerSpec,
        body: bollard::models::ContainerCreateBody,
    ) -> Result<String, EngineError> {
        Ok(self
            .docker
            .create_container(
                Some(bollard::query_parameters::CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    // A task runs its service's image as the service does.
                    platform: spec.platform.clone().unwrap_or_default(),
                }),
                body,
            )
            .await
            .map_err(|e| EngineError::api(format!("creating `{}`", spec.name), e))?
            .id)
    }
}
