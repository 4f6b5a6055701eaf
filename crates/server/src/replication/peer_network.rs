//! The raft network, client side: one cached, lazily connected tonic channel per peer,
//! TLS with this replica's certificate as the client certificate (mutual TLS, unless
//! the replica runs insecure), the cluster secret on every call, deadlines from openraft's RPC options, and
//! snapshots streamed in chunks.

use crate::replication::append_split::{self, APPEND_BUDGET_BYTES};
use crate::replication::cluster_clock::ClusterClock;
use crate::replication::encoding;
use corral_store::{SnapshotData, TypeConfig};
use corral_wire::headers::AUTHORIZATION_HEADER;
use corral_wire::pb;
use corral_wire::pb::raft_client::RaftClient;
use corral_wire::tls::Transport;
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// openraft does not enforce a snapshot deadline; a whole snapshot gets this long.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(1_000);
const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Adds the cluster secret to every peer call.
#[derive(Clone)]
pub(crate) struct SecretInterceptor {
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl SecretInterceptor {
    pub(crate) fn new(secret: &str) -> SecretInterceptor {
        let header = corral_wire::credentials::bearer_value(secret)
            .parse()
            .expect("the cluster secret is validated as printable text");
        SecretInterceptor { header }
    }
}

impl tonic::service::Interceptor for SecretInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_HEADER, self.header.clone());
        Ok(request)
    }
}

pub(crate) type PeerClient = RaftClient<InterceptedService<Channel, SecretInterceptor>>;

/// Cached channels to peers, shared by the raft network and write forwarding.
#[derive(Clone)]
pub(crate) struct PeerChannels {
    this_replica: u64,
    interceptor: SecretInterceptor,
    transport: Transport,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    clock: ClusterClock,
    append_hold: AppendHold,
}

/// Set while this replica leads without having heard from a quorum within its lease
/// (it can send but not receive): log entries are then not sent at all, only
/// openraft's quorum-loss probes (empty heartbeats). Otherwise the resends of entries
/// the followers already hold keep renewing their leader leases, and they do not elect
/// a leader they can reach for seconds (found by the simulation: 2-3 s failovers).
/// The guard sets and clears it (`replication::guard`).
#[derive(Clone, Default)]
pub(crate) struct AppendHold(Arc<AtomicBool>);

impl AppendHold {
    /// Hold or release; what it was before.
    pub(crate) fn set(&self, held: bool) -> bool {
        self.0.swap(held, Ordering::Relaxed)
    }

    fn is_held(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl PeerChannels {
    pub(crate) fn new(
        this_replica: u64,
        secret: &str,
        transport: Transport,
        clock: ClusterClock,
    ) -> PeerChannels {
        PeerChannels {
            this_replica,
            interceptor: SecretInterceptor::new(secret),
            transport,
            channels: Arc::default(),
            clock,
            append_hold: AppendHold::default(),
        }
    }

    /// The switch that holds log entries back while this leader lacks a quorum.
    pub(crate) fn append_hold(&self) -> AppendHold {
        self.append_hold.clone()
    }

    /// This replica's view of the cluster's time, for `RaftRequest.sent_at_ms`.
    pub(crate) fn sent_at_ms(&self) -> u64 {
        self.clock.for_peers_ms()
    }

    /// A client for the peer at `address`; the channel is created once and reused.
    pub(crate) fn client(&self, address: &str) -> Result<PeerClient, Status> {
        let mut channels = self.channels.lock().expect("peer channel cache lock");
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = self
                    .transport
                    .endpoint(address)
                    .map_err(|error| {
                        Status::invalid_argument(format!("peer address {address}: {error}"))
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    // A peer that died without closing its connection (power loss, a
                    // black-holed path) must not keep every later RPC waiting on it:
                    // a ping unanswered within the timeout closes the connection and
                    // the next call dials afresh. (Found by the simulation.)
                    .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true);
                let channel = corral_wire::network::lazy_channel(&endpoint);
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(
            RaftClient::with_interceptor(channel, self.interceptor.clone())
                .max_decoding_message_size(encoding::MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(encoding::MAX_PEER_MESSAGE_BYTES),
        )
    }

    pub(crate) fn this_replica(&self) -> u64 {
        self.this_replica
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerChannels {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            source: self.this_replica,
            target,
            client: self.client(&node.addr),
            clock: self.clock.clone(),
            append_hold: self.append_hold.clone(),
        }
    }
}

pub(crate) struct PeerConnection {
    source: u64,
    target: u64,
    client: Result<PeerClient, Status>,
    clock: ClusterClock,
    append_hold: AppendHold,
}

impl PeerConnection {
    fn client(&self) -> Result<PeerClient, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))
    }

    /// Send an encoded request with openraft's deadline and decode the reply.
    async fn unary<Response>(
        &self,
        action: RPCTypes,
        data: Vec<u8>,
        option: &RPCOption,
        call: impl AsyncFnOnce(
            PeerClient,
            pb::RaftRequest,
        ) -> Result<tonic::Response<pb::RaftReply>, Status>,
    ) -> Result<Response, RPCError<TypeConfig>>
    where
        Response: serde::de::DeserializeOwned,
    {
        let timeout = option.soft_ttl();
        let sent_at_ms = self.clock.for_peers_ms();
        let started = tokio::time::Instant::now();
        let request = pb::RaftRequest { data, sent_at_ms };
        let outcome = tokio::time::timeout(timeout, call(self.client()?, request)).await;
        if let Ok(Ok(reply)) = &outcome {
            // Every answer shows the peer's wall clock (votes too: a candidate learns
            // its peers' clocks before it leads).
            self.clock.observe_peer(
                self.target,
                sent_at_ms,
                reply.get_ref().replied_at_ms,
                started.elapsed().as_millis() as u64,
            );
        }
        match outcome {
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.source,
                target: self.target,
                timeout,
            })),
            Ok(Err(status)) => Err(status_to_rpc_error(status)),
            Ok(Ok(reply)) => decode_reply(reply.into_inner())
                .map_err(|status| RPCError::Network(NetworkError::new(&status))),
        }
    }
}

impl PeerConnection {
    /// `unary` of a request encoded whole (everything but appends, which are cut to fit).
    async fn encoded_unary<Request, Response>(
        &self,
        action: RPCTypes,
        request: &Request,
        option: &RPCOption,
        call: impl AsyncFnOnce(
            PeerClient,
            pb::RaftRequest,
        ) -> Result<tonic::Response<pb::RaftReply>, Status>,
    ) -> Result<Response, RPCError<TypeConfig>>
    where
        Request: serde::Serialize,
        Response: serde::de::DeserializeOwned,
    {
        let data = encoding::encode(request)
            .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        self.unary(action, data, option, call).await
    }
}

fn status_to_rpc_error(status: Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

pub(crate) fn decode_reply<T: serde::de::DeserializeOwned>(
    reply: pb::RaftReply,
) -> Result<T, Status> {
    if !reply.error.is_empty() {
        return Err(Status::internal(format!("peer failed: {}", reply.error)));
    }
    encoding::decode(&reply.data)
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if self.append_hold.is_held() && !request.entries.is_empty() {
            let status = Status::unavailable(
                "this leader has heard from no quorum within its lease; holding entries back \
                 so that its followers elect a leader they can reach",
            );
            return Err(RPCError::Unreachable(Unreachable::new(&status)));
        }
        let Some((data, cut_at)) = append_split::encode_within(request, APPEND_BUDGET_BYTES) else {
            let status = Status::resource_exhausted(
                "a single log entry is larger than a peer message may be",
            );
            return Err(RPCError::Network(NetworkError::new(&status)));
        };
        let response = self
            .unary(
                RPCTypes::AppendEntries,
                data,
                &option,
                async |mut client, message| client.append_entries(message).await,
            )
            .await?;
        Ok(append_split::answer_for_cut(response, cut_at))
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.encoded_unary(
            RPCTypes::Vote,
            &request,
            &option,
            async |mut client, message| client.vote(message).await,
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.encoded_unary(
            RPCTypes::Vote,
            &request,
            &option,
            async |mut client, message| client.pre_vote(message).await,
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.encoded_unary(
            RPCTypes::TransferLeader,
            &request,
            &option,
            async |mut client, message| client.transfer_leader(message).await,
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(SNAPSHOT_CHUNK_BYTES)
            .clamp(4096, encoding::MAX_PEER_MESSAGE_BYTES / 2);
        let meta = encoding::encode(&(vote, snapshot.meta.clone()))
            .map_err(|status| StreamingError::Network(NetworkError::new(&status)))?;
        let first = pb::SnapshotChunk {
            payload: Some(pb::snapshot_chunk::Payload::Meta(meta)),
        };
        let data = snapshot.snapshot;
        let chunk_count = data.len().div_ceil(chunk_bytes);
        let chunks = (0..chunk_count).map(move |index| {
            let start = index * chunk_bytes;
            let end = (start + chunk_bytes).min(data.len());
            pb::SnapshotChunk {
                payload: Some(pb::snapshot_chunk::Payload::Chunk(
                    data[start..end].to_vec(),
                )),
            }
        });
        let stream = futures::stream::iter(std::iter::once(first).chain(chunks));
        let mut client = self.client().map_err(StreamingError::from)?;
        let send = tokio::time::timeout(SNAPSHOT_TIMEOUT, client.install_snapshot(stream));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            outcome = send => match outcome {
                Err(_) => Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.source,
                    target: self.target,
                    timeout: SNAPSHOT_TIMEOUT,
                })),
                Ok(Err(status)) => Err(StreamingError::from(status_to_rpc_error(status))),
                Ok(Ok(reply)) => decode_reply(reply.into_inner()).map_err(|status| StreamingError::Network(NetworkError::new(&status))),
            },
        }
    }
}
