//! Registry credentials for pulls, found where the user's Docker client keeps
//! them (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths`,
//! `credHelpers`, `credsStore`), read through the `docker_credential` crate.
//! Production tags are private, so a pull must send what `docker pull`
//! would send; with nothing configured it is anonymous, as Docker's is.

use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use docker_credential::{CredentialRetrievalError, DockerCredential};

/// Docker Hub's server name in `config.json` (`docker login` writes this key).
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry an image reference names: its first path component when
/// that looks like a host (`.` or `:` in it, or `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Why the user's credentials for a registry could not be read: the pull
/// is not attempted, as `docker pull` would not attempt it either.
#[derive(Debug, thiserror::Error)]
#[error("the credentials for `{registry}` in {config} could not be read: {message}")]
pub struct CredentialError {
    pub registry: String,
    pub config: String,
    pub message: String,
}

/// The Docker client's config file, as it looks for it.
pub fn config_file() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// What to send with a pull of `image`: `None` for an anonymous pull.
pub fn credentials_for(image: &str) -> Result<Option<DockerCredentials>, CredentialError> {
    let Some(file) = config_file().filter(|f| f.exists()) else {
        return Ok(None);
    };
    let registry = registry_of(image);
    let server = if registry == "docker.io" {
        DOCKER_HUB
    } else {
        registry
    };
    let fail = |message: String| CredentialError {
        registry: registry.to_string(),
        config: file.display().to_string(),
        message,
    };
    let reader = std::fs::File::open(&file).map_err(|e| fail(e.to_string()))?;
    let found =
        docker_credential::get_credential_from_reader(std::io::BufReader::new(reader), server);
    let credential = match found {
        Ok(c) => c,
        Err(CredentialRetrievalError::NoCredentialConfigured) => return Ok(None),
        // A helper that knows nothing of this registry: anonymous, as with
        // Docker's own client.
        Err(CredentialRetrievalError::HelperFailure { stdout, .. })
            if stdout.contains("credentials not found") =>
        {
            return Ok(None)
        }
        Err(CredentialRetrievalError::ConfigReadError) => {
            return Err(fail(
                "it is not valid JSON of Docker's config format".into(),
            ))
        }
        Err(e) => return Err(fail(e.to_string().trim().to_string())),
    };
    Ok(Some(match credential {
        DockerCredential::UsernamePassword(username, password) => DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        },
        DockerCredential::IdentityToken(token) => DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_the_first_component_when_it_is_a_host() {
        for (image, registry) in [
            ("haproxy:2.8", "docker.io"),
            ("library/haproxy:2.8", "docker.io"),
            ("team/api:git-3f2a9c1", "docker.io"),
            (
                "registry.example.com/team/api:git-3f2a9c1",
                "registry.example.com",
            ),
            ("127.0.0.1:5000/team/api:1", "127.0.0.1:5000"),
            ("localhost/api:1", "localhost"),
            ("ghcr.io/org/app@sha256:abcd", "ghcr.io"),
        ] {
            assert_eq!(registry_of(image), registry, "{image}");
        }
    }
}
