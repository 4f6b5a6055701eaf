//! The gate every call passes before its message is read. A tonic interceptor runs
//! after the body is decoded, so an unauthenticated 16 MiB message once cost a replica
//! gigabytes before it was refused; this tower layer sits in front of decoding:
//! - Admin and AgentService calls are authenticated from their headers
//!   (`Authenticator::authenticate`) and the caller is handed to the RPC in the
//!   request's extensions; a refused call is answered without reading its body.
//! - Raft calls must carry the cluster secret.
//! - Each call's body is bounded by what that RPC can need (`message_limit_bytes`),
//!   not by one limit for everything: a SubmitJobs of many specs may be large, a
//!   CordonNode never is.
//! - A tenant's SubmitJob and SubmitJobs calls take from its submission rate
//!   (`submit_rate.rs`); over it, the call is refused before its message is read.

use crate::api::auth::Authenticator;
use crate::api::submit_rate::SubmitRate;
use crate::replication::health::Health;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use std::task::{Context, Poll};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;

/// The largest SubmitJobs (many specs, each with its command and environment).
pub(crate) const MAX_BATCH_MESSAGE_BYTES: usize = 16 << 20;
/// One job spec, or a heartbeat listing a node's replicas.
const MAX_SINGLE_MESSAGE_BYTES: usize = 1 << 20;
/// Every other Admin and AgentService request: names, ids, a few labels.
const MAX_SMALL_MESSAGE_BYTES: usize = 256 << 10;
/// gRPC frames each message with 5 bytes; a little slack for that.
const FRAMING_BYTES: usize = 1 << 10;

/// Which service a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Admin,
    Agent,
    Raft,
    /// Anything else (unknown paths are answered Unimplemented by the router).
    Other,
}

fn service_of(path: &str) -> Service {
    if path.starts_with("/corral.v1.Admin/") {
        Service::Admin
    } else if path.starts_with("/corral.v1.AgentService/") {
        Service::Agent
    } else if path.starts_with("/corral.v1.Raft/") {
        Service::Raft
    } else {
        Service::Other
    }
}

/// The most a call to `path` may send.
fn message_limit_bytes(path: &str) -> usize {
    let limit = match path {
        "/corral.v1.Admin/SubmitJobs" => MAX_BATCH_MESSAGE_BYTES,
        "/corral.v1.Admin/SubmitJob" | "/corral.v1.AgentService/Heartbeat" => {
            MAX_SINGLE_MESSAGE_BYTES
        }
        _ if service_of(path) == Service::Raft => {
            crate::replication::encoding::MAX_PEER_MESSAGE_BYTES
        }
        _ => MAX_SMALL_MESSAGE_BYTES,
    };
    limit + FRAMING_BYTES
}

#[derive(Clone)]
pub(crate) struct GateLayer {
    authenticator: Authenticator,
    submit_rate: SubmitRate,
    health: Health,
}

impl GateLayer {
    pub(crate) fn new(
        authenticator: Authenticator,
        submit_rate: SubmitRate,
        health: Health,
    ) -> GateLayer {
        GateLayer {
            authenticator,
            submit_rate,
            health,
        }
    }
}

/// Whether a call to `path` submits jobs (and so takes from its tenant's rate).
fn submits_jobs(path: &str) -> bool {
    matches!(
        path,
        "/corral.v1.Admin/SubmitJob" | "/corral.v1.Admin/SubmitJobs"
    )
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            authenticator: self.authenticator.clone(),
            submit_rate: self.submit_rate.clone(),
            health: self.health.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    authenticator: Authenticator,
    submit_rate: SubmitRate,
    health: Health,
}

/// Calls a replica answers even when it cannot serve: how it is, for operators.
fn answered_when_unhealthy(path: &str) -> bool {
    path == "/corral.v1.Admin/ClusterStatus"
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Gate<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let submit_rate = self.submit_rate.clone();
        let health = self.health.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path().to_string();
            let metadata = MetadataMap::from_headers(parts.headers.clone());
            match service_of(&path) {
                Service::Raft => {
                    if let Err(status) = authenticator.check_peer(&metadata) {
                        return Ok(status.into_http());
                    }
                }
                Service::Admin | Service::Agent => {
                    // A replica whose raft died, or a leader no quorum hears, answers at
                    // once, before any work, so the caller goes elsewhere.
                    if !answered_when_unhealthy(&path) {
                        if let Some(status) = health.refusal() {
                            return Ok(status.into_http());
                        }
                    }
                    let source = parts
                        .extensions
                        .get::<TcpConnectInfo>()
                        .and_then(|info| info.remote_addr)
                        .map(|address| address.ip());
                    match authenticator.authenticate(&metadata, source).await {
                        Ok(caller) => {
                            // A tenant over its submission rate is refused before its
                            // message is read (`submit_rate.rs`).
                            if let Some(tenant) = caller.principal.tenant() {
                                if submits_jobs(&path) {
                                    if let Err(status) = submit_rate.take(tenant, 1) {
                                        return Ok(status.into_http());
                                    }
                                }
                            }
                            parts.extensions.insert(caller);
                        }
                        Err(status) => return Ok(status.into_http()),
                    }
                }
                Service::Other => {}
            }
            let limit_bytes = message_limit_bytes(&path);
            // Read at most the limit; tonic hands a body's `Status` error to the client.
            let limited = http_body_util::Limited::new(body, limit_bytes).map_err(move |_| {
                tonic::Status::resource_exhausted(format!(
                    "this call's message may be at most {limit_bytes} bytes"
                ))
            });
            let request = http::Request::from_parts(parts, tonic::body::Body::new(limited));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rpc_gets_a_limit_that_fits_it() {
        assert!(message_limit_bytes("/corral.v1.Admin/SubmitJobs") > 16 << 20);
        assert!(message_limit_bytes("/corral.v1.Admin/SubmitJob") > 1 << 20);
        assert!(message_limit_bytes("/corral.v1.Admin/CordonNode") < 1 << 20);
        assert!(message_limit_bytes("/corral.v1.Admin/CreateTenant") < 1 << 20);
        assert_eq!(service_of("/corral.v1.Raft/AppendEntries"), Service::Raft);
        assert_eq!(service_of("/grpc.health.v1.Health/Check"), Service::Other);
    }
}
