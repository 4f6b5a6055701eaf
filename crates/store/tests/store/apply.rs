//! Applying proposals: outcomes come back typed (a rejection is an outcome, not an
//! error), events reach subscribers, the applied index and membership follow, and a
//! log applied out of order is an error rather than a panic.

use crate::common::*;
use corral_model::{Command, Event, Principal, Rejection};
use corral_state::Created;
use corral_store::{
    open_memory_storage, AppliedSummary, ApplyOutcome, MemoryDisk, Raft, Snapshot, SnapshotData,
    TypeConfig, Vote,
};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, Config, OptionalSend};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A network for a single-node cluster: there is nobody to reach.
struct NoNetwork;

struct NoConnection;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoConnection {
        NoConnection
    }
}

impl RaftNetworkV2<TypeConfig> for NoConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        _request: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::from_string(
            "single-node test",
        )))
    }

    async fn vote(
        &mut self,
        _request: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::from_string(
            "single-node test",
        )))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(Unreachable::from_string(
            "single-node test",
        )))
    }
}

async fn write(raft: &Raft, principal: Principal, command: Command) -> ApplyOutcome {
    let response = raft
        .client_write(proposal(principal, START_MS, command))
        .await
        .expect("a single-node leader commits");
    assert_eq!(
        response.data.index, response.log_id.index,
        "the outcome names its entry"
    );
    let mut outcomes: Vec<ApplyOutcome> = response.data.into_outcomes().collect();
    assert_eq!(outcomes.len(), 1, "one write, one outcome");
    outcomes.pop().expect("one outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_through_raft_return_typed_outcomes() {
    let storage = open_memory_storage(&MemoryDisk::default()).unwrap();
    let state_machine = storage.state_machine.clone();
    let mut events = state_machine.subscribe();
    let mut applied_index = state_machine.applied_index();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let raft = Raft::new(
        0,
        Arc::new(config),
        NoNetwork,
        storage.log,
        storage.state_machine,
    )
    .await
    .unwrap();
    raft.initialize(BTreeMap::from([(0, BasicNode::default())]))
        .await
        .unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "single node becomes leader")
        .await
        .unwrap();

    // Accepted: the outcome says what was created and how many events it produced.
    let mut setup = setup_commands(2).into_iter();
    let (principal, flavor) = setup.next().unwrap();
    let outcome = write(&raft, principal, flavor).await;
    assert!(outcome.result.is_ok(), "{outcome:?}");
    let (principal, tenant_create) = setup.next().unwrap();
    let outcome = write(&raft, principal, tenant_create.clone()).await;
    let summary = outcome.result.expect("tenant created");
    assert_eq!(summary.created, Some(Created::Tenant(TENANT)));
    assert!(summary.event_count >= 1);

    // Rejected: a typed rejection in the outcome, the same as `State::apply` gives.
    let outcome = write(&raft, Principal::PlatformAdmin, tenant_create).await;
    assert!(
        matches!(outcome.result, Err(Rejection::AlreadyExists { ref kind, .. }) if kind == "tenant"),
        "{outcome:?}"
    );
    let outcome = write(&raft, Principal::PlatformAdmin, job_submit(1)).await;
    assert!(
        matches!(outcome.result, Err(Rejection::PermissionDenied { .. })),
        "{outcome:?}"
    );

    for (principal, command) in setup {
        let outcome = write(&raft, principal, command).await;
        assert!(outcome.result.is_ok(), "{outcome:?}");
    }
    let outcome = write(&raft, TENANT_USER, job_submit(2)).await;
    let job = match outcome.result {
        Ok(AppliedSummary {
            created: Some(Created::Job(job)),
            ..
        }) => job,
        other => panic!("job submit: {other:?}"),
    };

    // The state, the applied index and the events all show it.
    assert!(state_machine.read(|state| state.job(job).is_some()));
    assert_eq!(*applied_index.borrow_and_update(), outcome.index);
    let mut submitted = false;
    while let Ok(batch) = events.try_recv() {
        assert!(!batch.is_empty(), "only batches with events are published");
        submitted |= batch
            .iter()
            .any(|record| matches!(record.event, Event::JobSubmitted { job: submitted, .. } if submitted == job));
    }
    assert!(submitted, "the JobSubmitted event was published");
    let membership = state_machine.membership();
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![0]
    );

    raft.shutdown().await.unwrap();
}

#[tokio::test]
async fn follower_apply_moves_index_membership_and_publishes_events() {
    let mut storage = open_memory_storage(&MemoryDisk::default()).unwrap();
    let state_machine = &mut storage.state_machine;
    let mut events = state_machine.subscribe();
    let applied_index = state_machine.applied_index();

    let mut entries = vec![blank(1, 1), membership(1, 2, &[0, 1, 2])];
    entries.extend(setup_entries(3, 2));
    let first_submit = 3 + entries.len() as u64 - 2;
    entries.extend(submit_entries(first_submit, 3));
    let last_index = first_submit + 2;
    apply(state_machine, entries).await;

    let (last_applied, membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, last_index)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 2)));
    assert_eq!(*applied_index.borrow(), last_index);
    assert_eq!(
        state_machine.read(|state| state.applied_index()),
        last_index
    );
    assert_eq!(state_machine.read(|state| state.jobs().count()), 3);

    let batch = events.try_recv().expect("one batch of events");
    assert!(batch
        .iter()
        .all(|record| record.index >= 3 && record.index <= last_index));
    assert!(events.try_recv().is_err(), "one apply call, one batch");
}

#[tokio::test]
async fn out_of_order_apply_is_an_error_not_a_panic() {
    let mut storage = open_memory_storage(&MemoryDisk::default()).unwrap();
    let state_machine = &mut storage.state_machine;
    apply(state_machine, setup_entries(5, 1)).await;
    let stale = submit_entries(3, 1);
    let stream = futures::stream::iter(stale.into_iter().map(|entry| Ok((entry, None))));
    let error = state_machine.apply(stream).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("out of order"), "{error}");
}
