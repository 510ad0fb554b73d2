//! Engine errors: each says which service, container or object failed and why,
//! in words a user can act on, never a raw API dump.

/// Everything that can go wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Nothing answered at the engine address.
    #[error("no Docker engine answered at {host} ({reason}); start one (for example `sudo systemctl start docker`) or point DOCKER_HOST at a running engine")]
    NoEngine { host: String, reason: String },

    /// An API call failed; `what` names the object and the operation.
    #[error("{what}: {message}")]
    Api { what: String, message: String },

    /// An image build failed at a step of its Dockerfile.
    #[error("the image of `{service}` failed to build at {step}: {message}")]
    Build {
        service: String,
        /// The Dockerfile step, as the builder printed it (`Step 3/5 : RUN make`).
        step: String,
        message: String,
        /// The last lines of build output, for the report.
        output: Vec<String>,
    },

    /// The build context could not be read or packed.
    #[error("cannot pack the build context of `{service}` at {path}: {message}")]
    Context {
        service: String,
        path: String,
        message: String,
    },

    /// An image is missing and could not be pulled.
    #[error(
        "the image `{image}` of `{service}` is not present and could not be pulled: {message}"
    )]
    Pull {
        service: String,
        image: String,
        message: String,
    },

    /// A host port the stack publishes is held by another process or container.
    #[error("host port {port} asked for by `{service}` is already in use (free it, or publish another port / leave the host port out to let the engine choose)")]
    PortTaken { service: String, port: String },

    /// An object with a devstack name exists but does not carry the project's labels.
    #[error("a {kind} named `{name}` exists but does not belong to project `{project}`; remove or rename it, or choose another project name with -p")]
    Foreign {
        kind: &'static str,
        name: String,
        project: String,
    },

    /// An object of the project was made by a newer devstack, whose labels
    /// this one may misread: nothing is touched.
    #[error("{what} was made by a newer devstack (label schema `{found}`; this devstack knows schema {known} and older): use that devstack, or take the project down with it first")]
    NewerSchema {
        what: String,
        found: String,
        known: u32,
    },

    /// A container of the project could not be found.
    #[error("{0}")]
    NotFound(String),
}

impl EngineError {
    /// Wraps a bollard error with what was being done, keeping only the
    /// engine's own message (not the HTTP status line).
    pub fn api(what: impl Into<String>, err: bollard::errors::Error) -> Self {
        EngineError::Api {
            what: what.into(),
            message: message_of(&err),
        }
    }
}

/// The engine's message, or the transport error, in one line.
pub(crate) fn message_of(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError { message, .. } => message.trim().to_string(),
        E::DockerStreamError { error } => error.trim().to_string(),
        E::RequestTimeoutError => "the engine did not answer in time".into(),
        other => other.to_string(),
    }
}

/// True for a 404 from the engine.
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// True for a 409 (name in use, removal in progress) or a 304 (already done).
pub(crate) fn is_conflict(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409 | 304,
            ..
        }
    )
}
