//! `/health` and `/version` over plain HTTP on the gRPC port, as etcd answers
//! them, for load balancers, curl and health checks that do not speak gRPC.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use super::{Core, ETCD_CLUSTER_VERSION, ETCD_VERSION};

pub(crate) fn add_routes(router: &mut axum::Router, core: Arc<Core>) {
    let r = std::mem::take(router);
    *router = r
        .route(
            "/health",
            get(move || {
                let core = core.clone();
                async move {
                    // Healthy while the log can still be written.
                    let ok = !core.durable().borrow().broken;
                    let body = if ok {
                        r#"{"health":"true","reason":""}"#
                    } else {
                        r#"{"health":"false","reason":"the data directory cannot be written"}"#
                    };
                    let status = if ok {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, [(CONTENT_TYPE, "application/json")], body)
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                (
                    [(CONTENT_TYPE, "application/json")],
                    format!(
                        r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#
                    ),
                )
            }),
        );
}
