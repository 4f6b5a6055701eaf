//! The client against in-process fake Admin servers: leader redirects, failover to the
//! next address, the bearer token, deadlines, error mapping and watch resumption.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

use corral_client::pb::admin_server::{Admin, AdminServer};
use corral_client::{pb, ClientOptions, CorralClient};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

#[derive(Default)]
struct Fake {
    /// Some(address): answer every call Unavailable naming this leader.
    redirect_to: Option<String>,
    /// Delay before answering `get_job`.
    delay: Duration,
    /// Calls seen: (method, authorization header).
    calls: Mutex<Vec<(String, String)>>,
    /// The `x-corral-request-id` of every call seen.
    request_ids: Mutex<Vec<String>>,
    /// Events the watch serves; the first stream breaks after `break_after` events.
    events: Vec<pb::Event>,
    break_after: Option<usize>,
    watch_requests: Mutex<Vec<u64>>,
}

#[derive(Clone, Default)]
struct FakeAdmin(Arc<Fake>);

impl FakeAdmin {
    fn record<T>(&self, method: &str, request: &Request<T>) -> Result<(), Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.0
            .calls
            .lock()
            .unwrap()
            .push((method.to_string(), authorization));
        let request_id = request
            .metadata()
            .get("x-corral-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.0.request_ids.lock().unwrap().push(request_id);
        match &self.0.redirect_to {
            Some(leader) => {
                let mut status = Status::unavailable("not the leader");
                status
                    .metadata_mut()
                    .insert("x-corral-leader", leader.parse().unwrap());
                Err(status)
            }
            None => Ok(()),
        }
    }
}

macro_rules! fake_admin {
    (custom { $($custom:tt)* } unimplemented { $($method:ident($request:ident) -> $response:ident;)* }) => {
        #[tonic::async_trait]
        impl Admin for FakeAdmin {
            $($custom)*
            $(
                async fn $method(&self, _request: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    Err(Status::unimplemented(stringify!($method)))
                }
            )*
        }
    };
}

type EventStream = futures::stream::BoxStream<'static, Result<pb::Event, Status>>;

fake_admin! {
    custom {
        type WatchStream = EventStream;
        type JobLogsStream = futures::stream::BoxStream<'static, Result<pb::JobLogsChunk, Status>>;

        async fn job_logs(&self, _request: Request<pb::JobLogsRequest>) -> Result<Response<Self::JobLogsStream>, Status> {
            Err(Status::unimplemented("job_logs"))
        }

        async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
            self.record("get_job", &request)?;
            tokio::time::sleep(self.0.delay).await;
            match request.into_inner().job {
                404 => Err(Status::not_found("job job-404 not found")),
                job => Ok(Response::new(pb::Job { id: job, state: "Running".into(), ..Default::default() })),
            }
        }

        async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<EventStream>, Status> {
            self.record("watch", &request)?;
            let from_index = request.into_inner().from_index;
            let first = {
                let mut requests = self.0.watch_requests.lock().unwrap();
                requests.push(from_index);
                requests.len() == 1
            };
            let mut events: Vec<Result<pb::Event, Status>> =
                self.0.events.iter().filter(|event| event.index >= from_index).cloned().map(Ok).collect();
            if let (true, Some(count)) = (first, self.0.break_after) {
                events.truncate(count);
                events.push(Err(Status::unavailable("replica stopping")));
            }
            // Then stay open, as a following watch does.
            let stream = futures::stream::iter(events).chain(futures::stream::pending());
            Ok(Response::new(stream.boxed()))
        }
    }
    unimplemented {
        create_tenant(CreateTenantRequest) -> Tenant;
        set_tenant_quota(SetTenantQuotaRequest) -> Ack;
        delete_tenant(DeleteTenantRequest) -> Ack;
        list_tenants(ListTenantsRequest) -> ListTenantsResponse;
        create_token(CreateTokenRequest) -> CreateTokenResponse;
        revoke_token(RevokeTokenRequest) -> Ack;
        rotate_token(RotateTokenRequest) -> CreateTokenResponse;
        list_tokens(ListTokensRequest) -> ListTokensResponse;
        define_flavor(Flavor) -> Ack;
        list_flavors(ListTenantsRequest) -> ListFlavorsResponse;
        create_network(CreateNetworkRequest) -> Network;
        delete_network(DeleteNetworkRequest) -> Ack;
        list_networks(ListNetworksRequest) -> ListNetworksResponse;
        set_network_storage(SetNetworkStorageRequest) -> Ack;
        create_pool(CreatePoolRequest) -> Pool;
        get_pool(GetPoolRequest) -> Pool;
        list_pools(ListPoolsRequest) -> ListPoolsResponse;
        scale_pool(ScalePoolRequest) -> Ack;
        delete_pool(DeletePoolRequest) -> Ack;
        set_pool_job_types(SetPoolJobTypesRequest) -> Ack;
        request_driver_upgrade(RequestDriverUpgradeRequest) -> Ack;
        cancel_driver_upgrade(CancelDriverUpgradeRequest) -> Ack;
        renew_pool(RenewPoolRequest) -> Ack;
        register_node(RegisterNodeRequest) -> Node;
        get_node(GetNodeRequest) -> Node;
        list_nodes(ListNodesRequest) -> ListNodesResponse;
        drain_node(DrainNodeRequest) -> Ack;
        cordon_node(NodeRef) -> Ack;
        uncordon_node(NodeRef) -> Ack;
        lock_node(NodeRef) -> Ack;
        unlock_node(NodeRef) -> Ack;
        delete_node(NodeRef) -> Ack;
        set_node_taints(SetNodeTaintsRequest) -> Ack;
        set_node_labels(SetNodeLabelsRequest) -> Ack;
        set_node_standby(SetNodeStandbyRequest) -> Ack;
        node_metrics(NodeMetricsRequest) -> NodeMetricsResponse;
        submit_job(SubmitJobRequest) -> SubmitJobResponse;
        submit_jobs(SubmitJobsRequest) -> SubmitJobsResponse;
        list_jobs(ListJobsRequest) -> ListJobsResponse;
        terminate_job(JobRef) -> Ack;
        stop_job(JobRef) -> Ack;
        start_job(JobRef) -> Ack;
        change_priority(ChangePriorityRequest) -> Ack;
        list_bills(ListBillsRequest) -> ListBillsResponse;
        list_audit(ListAuditRequest) -> ListAuditResponse;
        cluster_status(ClusterStatusRequest) -> ClusterStatusResponse;
        add_replica(AddReplicaRequest) -> Ack;
        remove_replica(RemoveReplicaRequest) -> Ack;
        trigger_snapshot(Empty) -> Ack;
        disarm_alarm(DisarmAlarmRequest) -> Ack;
        create_queue(QueueSpec) -> Ack;
        update_queue(QueueSpec) -> Ack;
        delete_queue(DeleteQueueRequest) -> Ack;
        list_queues(ListQueuesRequest) -> ListQueuesResponse;
    }
}

/// Serves `fake` on a fresh loopback port; returns its `host:port`.
async fn serve(fake: Fake) -> (String, FakeAdmin) {
    let admin = FakeAdmin(Arc::new(fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = AdminServer::new(admin.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (address, admin)
}

fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn quick() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_follower_redirect_is_followed_to_the_leader_with_the_token() {
    let (leader, leader_admin) = serve(Fake::default()).await;
    let (follower, follower_admin) = serve(Fake {
        redirect_to: Some(leader.clone()),
        ..Fake::default()
    })
    .await;
    let client =
        CorralClient::connect(vec![follower.clone()], Some("t0ken".into()), quick()).unwrap();

    let job = client.get_job(7).await.unwrap();
    assert_eq!((job.id, job.state.as_str()), (7, "Running"));
    assert_eq!(
        *follower_admin.0.calls.lock().unwrap(),
        [("get_job".to_string(), "Bearer t0ken".to_string())]
    );
    assert_eq!(
        *leader_admin.0.calls.lock().unwrap(),
        [("get_job".to_string(), "Bearer t0ken".to_string())]
    );
    assert_eq!(
        client.addresses(),
        [format!("http://{follower}"), format!("http://{leader}")]
    );

    // The next call goes straight to the leader.
    client.get_job(8).await.unwrap();
    assert_eq!(follower_admin.0.calls.lock().unwrap().len(), 1);
    assert_eq!(leader_admin.0.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_replica_is_skipped() {
    let (alive, admin) = serve(Fake::default()).await;
    let client = CorralClient::connect(vec![closed_address(), alive], None, quick()).unwrap();
    assert_eq!(client.get_job(3).await.unwrap().id, 3);
    assert_eq!(
        *admin.0.calls.lock().unwrap(),
        [("get_job".to_string(), String::new())]
    );
}

#[tokio::test]
async fn a_dead_leader_named_by_a_follower_is_skipped_without_waiting() {
    // During a failover the survivors still name the dead leader until a new one is
    // elected; the client goes on to the next replica at once instead of backing off.
    let dead = closed_address();
    let (follower, follower_admin) = serve(Fake {
        redirect_to: Some(dead.clone()),
        ..Fake::default()
    })
    .await;
    let (alive, alive_admin) = serve(Fake::default()).await;
    let options = ClientOptions {
        backoff: Duration::from_secs(2),
        ..quick()
    };
    let client = CorralClient::connect(vec![dead, follower, alive], None, options).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(client.get_job(5).await.unwrap().id, 5);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no backoff pause: {:?}",
        started.elapsed()
    );
    assert_eq!(follower_admin.0.calls.lock().unwrap().len(), 1);
    assert_eq!(alive_admin.0.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn answers_are_errors_with_their_code_and_are_not_retried() {
    let (address, admin) = serve(Fake::default()).await;
    let client = CorralClient::connect(vec![address], None, quick()).unwrap();
    let error = client.get_job(404).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.to_string(), "not found: job job-404 not found");
    let error = client
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
    assert_eq!(admin.0.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_hits_the_deadline() {
    let (address, _admin) = serve(Fake {
        delay: Duration::from_secs(5),
        ..Fake::default()
    })
    .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        ..quick()
    };
    let client = CorralClient::connect(vec![address], None, options).unwrap();
    let started = std::time::Instant::now();
    let error = client.get_job(1).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn event(index: u64, kind: &str) -> pb::Event {
    pb::Event {
        index,
        kind: kind.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_broken_watch_resumes_without_repeats_or_gaps() {
    let events = vec![
        event(1, "a"),
        event(2, "b"),
        event(2, "c"),
        event(2, "d"),
        event(3, "e"),
    ];
    let (address, admin) = serve(Fake {
        events,
        break_after: Some(3),
        ..Fake::default()
    })
    .await;
    let client = CorralClient::connect(vec![address], None, quick()).unwrap();
    let mut stream = client.watch_connected(1).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(event.kind);
    }
    assert_eq!(kinds, ["a", "b", "c", "d", "e"]);
    assert_eq!(*admin.0.watch_requests.lock().unwrap(), [1, 2]);
    // Nothing more arrives (the fake keeps the stream open).
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stream.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_watch_of_an_unreachable_cluster_fails_at_once() {
    let client = CorralClient::connect(vec![closed_address()], None, quick()).unwrap();
    let error = client.watch_connected(0).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    let mut lazy = client.watch(0);
    let error = lazy.next().await.unwrap().unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(lazy.next().await.is_none());
}

#[tokio::test]
async fn every_attempt_of_one_call_carries_the_same_request_id_and_calls_differ() {
    let (leader, leader_admin) = serve(Fake::default()).await;
    let (follower, follower_admin) = serve(Fake {
        redirect_to: Some(leader.clone()),
        ..Fake::default()
    })
    .await;
    let client = CorralClient::connect(vec![follower], None, quick()).unwrap();
    client.get_job(7).await.unwrap();
    client.get_job(8).await.unwrap();
    let first_attempt = follower_admin.0.request_ids.lock().unwrap().clone();
    let answered = leader_admin.0.request_ids.lock().unwrap().clone();
    assert_eq!(first_attempt.len(), 1);
    assert_eq!(answered.len(), 2);
    assert_eq!(
        first_attempt[0].len(),
        32,
        "32 hex digits: {first_attempt:?}"
    );
    assert_eq!(first_attempt[0], answered[0], "a retry is the same write");
    assert_ne!(answered[0], answered[1], "another call is another write");
}

#[tokio::test]
async fn seeded_request_ids_replay() {
    let (address, admin) = serve(Fake::default()).await;
    let seeded = || ClientOptions {
        request_id_seed: Some(11),
        ..quick()
    };
    for _ in 0..2 {
        let client = CorralClient::connect(vec![address.clone()], None, seeded()).unwrap();
        client.get_job(1).await.unwrap();
    }
    let ids = admin.0.request_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}
