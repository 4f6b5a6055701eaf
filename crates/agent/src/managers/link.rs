//! The gRPC side towards the managers: one lazily connected channel per manager address
//! (shared by all nodes of the process; TLS with the agent's certificate as its client
//! certificate unless the agent runs insecure), each node's own bearer token, per-call
//! deadlines, and each
//! node's "current manager" — moved to the leader a follower names in `x-corral-leader`,
//! or rotated through the configured managers when the current one cannot be reached.
//! Also the capped exponential backoff used by every retry loop of the agent.

use crate::environment::Jitter;
use crate::wire::pb::agent_service_client::AgentServiceClient;
use crate::wire::{AuthInterceptor, Transport, LEADER_HEADER};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::debug;

/// The generated agent-service client over one manager's channel, with the token.
pub(crate) type AgentStub = AgentServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// Channels kept at most (configured managers plus leaders learned from redirects).
pub(crate) const MAX_KNOWN_MANAGERS: usize = 32;
/// Deadline of one unary call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on connecting to one manager.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Channels to the managers, shared by every node of the agent process.
#[derive(Debug)]
pub(crate) struct ManagerPool {
    configured: Vec<String>,
    transport: Transport,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ManagerPool {
    /// A pool for `managers` (`host:port` or URIs), dialling over `transport`.
    pub(crate) fn new(managers: &[String], transport: Transport) -> Result<ManagerPool, Status> {
        let mut configured: Vec<String> = Vec::new();
        for manager in managers.iter().take(MAX_KNOWN_MANAGERS) {
            let address = transport.uri(manager);
            if !configured.contains(&address) {
                configured.push(address);
            }
        }
        if configured.is_empty() {
            return Err(Status::invalid_argument("no manager address"));
        }
        Ok(ManagerPool {
            configured,
            transport,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// The URI of a manager address (a leader named by a follower: `host:port`).
    pub(crate) fn uri(&self, address: &str) -> String {
        self.transport.uri(address)
    }

    /// The configured managers, normalised.
    pub(crate) fn configured(&self) -> &[String] {
        &self.configured
    }

    /// The client of the manager at `address` (a normalised URI), sending a node's token.
    pub(crate) fn stub(
        &self,
        address: &str,
        interceptor: AuthInterceptor,
    ) -> Result<AgentStub, Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Status::internal("channel cache poisoned"))?;
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                if channels.len() >= MAX_KNOWN_MANAGERS {
                    // Forget learned addresses; configured ones reconnect lazily.
                    channels.clear();
                }
                let endpoint = self
                    .transport
                    .endpoint(address)
                    .map_err(|error| {
                        Status::invalid_argument(format!("manager address {address}: {error}"))
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                let channel = crate::wire::network::lazy_channel(&endpoint);
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(AgentServiceClient::with_interceptor(channel, interceptor))
    }
}

/// What to do after a failed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A follower named the leader (as it wrote it, `host:port`): call it now.
    Redirect(String),
    /// The manager could not be reached or could not serve: try the next one.
    Unreachable,
    /// An answer that another attempt will not change (e.g. invalid argument).
    Refused,
}

/// Classifies a failed call's status.
pub(crate) fn classify(status: &Status) -> Failure {
    if status.code() == Code::Unavailable {
        if let Some(leader) = leader_of(status) {
            return Failure::Redirect(leader);
        }
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            Failure::Unreachable
        }
        Code::Unknown | Code::Internal
            if status.message().contains("transport error")
                || status.message().starts_with("Service was not ready")
                || status.message().contains("connection") =>
        {
            Failure::Unreachable
        }
        _ => Failure::Refused,
    }
}

/// The leader address a follower named, trimmed and checked.
fn leader_of(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_HEADER)?.to_str().ok()?.trim();
    let valid = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\');
    valid.then(|| value.to_string())
}

/// One node's view of the managers: which one it is talking to now.
#[derive(Debug)]
pub(crate) struct ManagerLink {
    pool: Arc<ManagerPool>,
    current: watch::Sender<String>,
    /// Index into the configured list for the next rotation.
    rotation: Mutex<usize>,
    /// For the backoffs of the node's retry loops.
    jitter: Jitter,
    /// The token calls carry: a bootstrap token until the node has its own credential.
    credential: Mutex<Option<AuthInterceptor>>,
}

impl ManagerLink {
    /// Starts at the configured manager `first` (modulo their number), so virtual nodes
    /// spread their first calls; its backoffs draw their jitter from `jitter`.
    pub(crate) fn new(pool: Arc<ManagerPool>, first: usize, jitter: Jitter) -> ManagerLink {
        let index = first % pool.configured().len();
        let (current, _) = watch::channel(pool.configured()[index].clone());
        ManagerLink {
            pool,
            current,
            rotation: Mutex::new(index),
            jitter,
            credential: Mutex::new(None),
        }
    }

    /// Send `token` with every later call.
    pub(crate) fn set_credential(&self, token: &str) -> Result<(), Status> {
        let interceptor = AuthInterceptor::new(Some(token))
            .map_err(|error| Status::invalid_argument(format!("credential: {error}")))?;
        let mut credential = self
            .credential
            .lock()
            .map_err(|_| Status::internal("credential poisoned"))?;
        *credential = Some(interceptor);
        Ok(())
    }

    /// A backoff for one of the node's retry loops.
    pub(crate) fn backoff(&self, initial: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(initial, max, self.jitter.clone())
    }

    /// The manager calls go to now.
    pub(crate) fn current(&self) -> String {
        self.current.borrow().clone()
    }

    /// Notified whenever the current manager changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<String> {
        self.current.subscribe()
    }

    /// Moves to the leader a follower named.
    pub(crate) fn follow(&self, leader: String) {
        self.current.send_if_modified(|current| {
            if *current == leader {
                false
            } else {
                debug!("following the leader to {leader}");
                *current = leader;
                true
            }
        });
    }

    /// Moves to the next configured manager.
    pub(crate) fn rotate(&self) {
        let configured = self.pool.configured();
        let next = {
            let Ok(mut rotation) = self.rotation.lock() else {
                return;
            };
            *rotation = (*rotation + 1) % configured.len();
            configured[*rotation].clone()
        };
        debug!("trying manager {next}");
        self.current.send_replace(next);
    }

    /// Reacts to a failed call: follows a named leader or rotates. Returns the class.
    pub(crate) fn after_failure(&self, status: &Status) -> Failure {
        let failure = classify(status);
        match &failure {
            Failure::Redirect(leader) => self.follow(self.pool.uri(leader)),
            Failure::Unreachable => self.rotate(),
            Failure::Refused => {}
        }
        failure
    }

    /// The stub of the current manager.
    pub(crate) fn stub(&self) -> Result<AgentStub, Status> {
        let interceptor = self
            .credential
            .lock()
            .map_err(|_| Status::internal("credential poisoned"))?
            .clone()
            .ok_or_else(|| Status::unauthenticated("this node has no credential yet"))?;
        self.pool.stub(&self.current(), interceptor)
    }

    /// Runs a unary call on the current manager with a deadline; on a redirect or an
    /// unreachable manager, retries on the leader or the next manager, up to one round
    /// over the managers plus two redirects. Returns the last failure otherwise.
    pub(crate) async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut(AgentStub) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempts = self.pool.configured().len() + 2;
        let mut last = Status::unavailable("no manager tried");
        for _ in 0..attempts {
            let stub = self.stub()?;
            let result = tokio::time::timeout(CALL_TIMEOUT, attempt(stub)).await;
            let status = match result {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("the manager did not answer in time"),
            };
            if self.after_failure(&status) == Failure::Refused {
                return Err(status);
            }
            last = status;
        }
        Err(last)
    }
}

/// Capped exponential backoff with jitter.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// With wall-clock jitter.
    #[cfg(test)]
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(initial, max, Jitter::wall_clock())
    }

    pub(crate) fn with_jitter(initial: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
            jitter,
        }
    }

    /// The next pause (doubling up to the cap, with up to 25 % jitter).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + base.mul_f64(f64::from(self.jitter.next_per_mille()) / 4000.0)
    }

    /// Back to the initial pause (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with_leader(leader: &str) -> Status {
        let mut status = Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_HEADER, MetadataValue::try_from(leader).unwrap());
        status
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify(&with_leader("127.0.0.1:7002")),
            Failure::Redirect("127.0.0.1:7002".into())
        );
        assert_eq!(classify(&Status::unavailable("down")), Failure::Unreachable);
        assert_eq!(
            classify(&Status::deadline_exceeded("slow")),
            Failure::Unreachable
        );
        assert_eq!(
            classify(&Status::unknown("transport error")),
            Failure::Unreachable
        );
        assert_eq!(classify(&Status::invalid_argument("bad")), Failure::Refused);
        assert_eq!(classify(&Status::not_found("no node")), Failure::Refused);
    }

    #[tokio::test]
    async fn the_link_follows_leaders_and_rotates_through_the_managers() {
        let pool = Arc::new(
            ManagerPool::new(
                &[
                    "127.0.0.1:1".into(),
                    "127.0.0.1:2".into(),
                    "127.0.0.1:1".into(),
                ],
                Transport::Plaintext,
            )
            .unwrap(),
        );
        assert_eq!(pool.configured().len(), 2);
        let link = ManagerLink::new(pool, 0, Jitter::wall_clock());
        let mut changes = link.subscribe();
        assert_eq!(link.current(), "http://127.0.0.1:1");
        link.after_failure(&Status::unavailable("down"));
        assert_eq!(link.current(), "http://127.0.0.1:2");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        link.after_failure(&with_leader("127.0.0.1:9"));
        assert_eq!(link.current(), "http://127.0.0.1:9");
        link.after_failure(&Status::invalid_argument("bad"));
        assert_eq!(link.current(), "http://127.0.0.1:9");
        link.rotate();
        assert_eq!(link.current(), "http://127.0.0.1:1");
    }

    #[tokio::test]
    async fn calls_to_unreachable_managers_fail_after_one_round() {
        let pool =
            Arc::new(ManagerPool::new(&["127.0.0.1:1".into()], Transport::Plaintext).unwrap());
        let link = ManagerLink::new(pool, 0, Jitter::wall_clock());
        assert_eq!(
            link.stub().unwrap_err().code(),
            Code::Unauthenticated,
            "no call leaves without a credential"
        );
        link.set_credential("token-0123456789abcdef").unwrap();
        let started = std::time::Instant::now();
        let result = link
            .call(|mut stub| async move {
                stub.heartbeat(crate::wire::pb::HeartbeatRequest::default())
                    .await
            })
            .await;
        assert_eq!(classify(&result.unwrap_err()), Failure::Unreachable);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..4).map(|_| backoff.next_delay()).collect();
        for (delay, base) in delays.iter().zip([100u64, 200, 400, 400]) {
            assert!(*delay >= Duration::from_millis(base), "{delays:?}");
            assert!(*delay <= Duration::from_millis(base * 5 / 4), "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(200));
    }
}
