//! The raft network, server side: the `corral.v1.Raft` gRPC service that receives
//! appends, votes, snapshot streams and forwarded writes from peers. Every call must
//! carry the cluster secret.

use crate::api::auth::Authenticator;
use crate::environment::BlockingWork;
use crate::replication::cluster_clock::ClusterClock;
use crate::replication::encoding;
use crate::replication::proposer::Proposer;
use corral_store::TypeConfig;
use corral_store::{Raft, Write};
use corral_wire::pb;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use serde::Serialize;
use std::fmt::Display;
use tonic::{Request, Response, Status, Streaming};

/// Largest snapshot a replica accepts; bounds memory while receiving.
const MAX_SNAPSHOT_BYTES: usize = 8 << 30;

pub(crate) struct RaftService {
    raft: Raft,
    authenticator: Authenticator,
    proposer: Proposer,
    blocking_work: BlockingWork,
    clock: ClusterClock,
}

impl RaftService {
    pub(crate) fn new(
        raft: Raft,
        authenticator: Authenticator,
        proposer: Proposer,
        blocking_work: BlockingWork,
        clock: ClusterClock,
    ) -> RaftService {
        RaftService {
            raft,
            authenticator,
            proposer,
            blocking_work,
            clock,
        }
    }

    /// Encode a raft answer with this replica's wall clock (the leader measures peers'
    /// clocks from it).
    fn reply<T: Serialize, E: Display>(
        &self,
        result: Result<T, E>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let replied_at_ms = self.clock.wall_ms();
        match result {
            Ok(value) => Ok(Response::new(pb::RaftReply {
                data: encoding::encode(&value)?,
                error: String::new(),
                replied_at_ms,
            })),
            Err(error) => Ok(Response::new(pb::RaftReply {
                data: Vec::new(),
                error: error.to_string(),
                replied_at_ms,
            })),
        }
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.authenticator.check_peer(request.metadata())?;
        let message: AppendEntriesRequest<TypeConfig> = encoding::decode(&request.get_ref().data)?;
        let sent_at_ms = request.get_ref().sent_at_ms;
        let answer = self.raft.append_entries(message).await;
        if matches!(&answer, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
        {
            // Only the leader this replica follows sets its view of the cluster's time.
            self.clock.observe_leader(sent_at_ms);
        }
        self.reply(answer)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.authenticator.check_peer(request.metadata())?;
        let message: VoteRequest<TypeConfig> = encoding::decode(&request.get_ref().data)?;
        self.reply(self.raft.vote(message).await)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.authenticator.check_peer(request.metadata())?;
        let message: VoteRequest<TypeConfig> = encoding::decode(&request.get_ref().data)?;
        self.reply(self.raft.pre_vote(message).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.authenticator.check_peer(request.metadata())?;
        let mut stream = request.into_inner();
        let (vote, meta): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>) =
            match stream.message().await?.and_then(|chunk| chunk.payload) {
                Some(pb::snapshot_chunk::Payload::Meta(bytes)) => encoding::decode(&bytes)?,
                _ => {
                    return Err(Status::invalid_argument(
                        "a snapshot stream starts with its meta message",
                    ))
                }
            };
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            match chunk.payload {
                Some(pb::snapshot_chunk::Payload::Chunk(bytes)) => {
                    if data.len() + bytes.len() > MAX_SNAPSHOT_BYTES {
                        return Err(Status::resource_exhausted("snapshot larger than 8 GiB"));
                    }
                    data.extend_from_slice(&bytes);
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "only data chunks may follow the meta message",
                    ))
                }
            }
        }
        // Validate before handing it to openraft, which treats a bad snapshot as fatal.
        // Decoding a large state takes seconds: not on the async runtime, except in the
        // simulation (`BlockingWork::Inline`).
        let data: corral_store::SnapshotData = std::sync::Arc::new(data.into());
        let checked = data.clone();
        let check = move || corral_state::State::decode_snapshot(&checked).map(drop);
        let decoded = self
            .blocking_work
            .run(check)
            .await
            .map_err(|error| Status::internal(format!("snapshot check failed: {error}")))?;
        decoded.map_err(|error| {
            Status::invalid_argument(format!("snapshot does not decode: {error}"))
        })?;
        let snapshot: SnapshotOf<TypeConfig, corral_store::SnapshotData> = openraft::Snapshot {
            meta,
            snapshot: data,
        };
        self.reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn forward(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.authenticator.check_peer(request.metadata())?;
        let write: Write = encoding::decode(&request.get_ref().data)?;
        let outcome = self.proposer.propose_forwarded_here(write).await?;
        self.reply::<_, String>(Ok(outcome))
    }
}
