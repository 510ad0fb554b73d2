//! The router's nginx path: a rendered configuration checked with `nginx -t`
//! in the proxy container, installed, reloaded with `nginx -s reload`, and
//! judged reloaded only when nginx's workers answer the control port with
//! its generation; a reload nginx refuses puts the previous good file back
//! (one not seen taken in time leaves the new file for the router to try
//! again). nginx open source has no runtime API, so every change of the
//! rendering (an instance coming or going too) takes this path.

use std::time::{Duration, Instant};

use crate::engine::nginx::read_control;
use crate::engine::proxy::{CheckError, ProxyContainer, NGINX_CONFIG_PATH};
use crate::engine::Engine;

/// How long the workers of a reloaded configuration may take to answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers in a row with the new generation before a reload counts as done:
/// the master stops the old workers right after starting the new ones, and
/// an old worker may accept a connection in between.
const CONFIRMATIONS: usize = 3;

/// Why nginx does not serve a configuration.
#[derive(Debug)]
pub enum Failure {
    /// `nginx -t` refused it; nothing was installed.
    Check(CheckError),
    /// nginx did not take it (its words); the previous file is back in place
    /// when `restored`.
    Reload { message: String, restored: bool },
    /// nginx was told to reload and said nothing against it, but its
    /// workers did not answer with the new generation in time; the new file
    /// stays in place.
    Unconfirmed(String),
    /// The engine failed us.
    Trouble(String),
}

/// The generation the control port of `config` (with devstack's sections)
/// will report, read from the section itself.
pub fn expected_generation(config: &str) -> Option<String> {
    let at = config.find("\"devstack-nginx ")? + "\"devstack-nginx ".len();
    let rest = &config[at..];
    let end = rest.find('\\')?;
    Some(rest[..end].to_string())
}

/// Checks, installs and reloads `text`; on a failed reload puts `previous`
/// (the live configuration, when known) back.
pub async fn install(
    engine: &Engine,
    proxy: &ProxyContainer,
    previous: Option<&str>,
    text: &str,
) -> Result<(), Failure> {
    match engine.nginx_check(&proxy.id, text).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::Check(e)),
        Err(e) => return Err(Failure::Trouble(e.to_string())),
    }
    engine
        .upload_file(&proxy.id, NGINX_CONFIG_PATH, text)
        .await
        .map_err(|e| Failure::Trouble(e.to_string()))?;
    let refused = match engine.nginx_reload(&proxy.id).await {
        Ok(Ok(())) => match expected_generation(text) {
            Some(generation) => match wait_generation(proxy, &generation).await {
                Ok(()) => return Ok(()),
                Err(waited) => {
                    let said = nginx_complaints(engine, proxy).await;
                    if said.is_empty() {
                        // Not refused, only not seen taken (a loaded
                        // machine, a slow master): the new file stays, as
                        // nginx may still read it, and the previous one put
                        // back now could be what it reads instead. The
                        // router tries again.
                        return Err(Failure::Unconfirmed(waited));
                    }
                    format!("{waited}; nginx said: {said}")
                }
            },
            // A configuration without devstack's sections (never rendered
            // by the router): the signal is all there is to go by.
            None => return Ok(()),
        },
        Ok(Err(message)) => message,
        Err(e) => e.to_string(),
    };
    let restored = match previous {
        Some(good) => engine
            .upload_file(&proxy.id, NGINX_CONFIG_PATH, good)
            .await
            .is_ok(),
        None => false,
    };
    Err(Failure::Reload {
        message: refused,
        restored,
    })
}

/// Waits until the control port answers `generation` [`CONFIRMATIONS`]
/// times in a row.
pub async fn wait_generation(proxy: &ProxyContainer, generation: &str) -> Result<(), String> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    let mut seen = 0;
    let mut last;
    loop {
        match read_control(proxy.cli).await {
            Ok(answer) if answer.generation == generation => {
                seen += 1;
                if seen >= CONFIRMATIONS {
                    return Ok(());
                }
                continue;
            }
            Ok(answer) => {
                seen = 0;
                last = format!("its workers still run generation {}", answer.generation);
            }
            Err(e) => {
                seen = 0;
                last = e.to_string();
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nginx did not take the new configuration within {RELOAD_TIMEOUT:?} ({last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The last `[emerg]`/`[alert]` lines nginx logged (a reload it refused).
async fn nginx_complaints(engine: &Engine, proxy: &ProxyContainer) -> String {
    let lines = engine.last_lines(&proxy.id, 40).await;
    let complaints: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]"))
        .map(|l| match l.find('[') {
            Some(i) => l[i..].trim(),
            None => l.trim(),
        })
        .collect();
    complaints
        .iter()
        .rev()
        .take(2)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nginx::{generation, with_devstack_sections, StreamModule};

    #[test]
    fn the_generation_is_read_back_from_the_section() {
        let config = "events {}\nhttp {}\n";
        let text = with_devstack_sections(
            config,
            None,
            "172.18.0.1".parse().unwrap(),
            &StreamModule::BuiltIn,
        );
        let expected = expected_generation(&text).unwrap();
        assert_eq!(expected.len(), 16);
        assert_eq!(expected, generation(&format!("{config}\nNone\n172.18.0.1")));
        assert_eq!(expected_generation(config), None);
    }
}
