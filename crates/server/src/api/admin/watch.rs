//! The resumable Watch stream: first the retained events from the requested index, then
//! new ones as entries are applied, filtered to what the principal may see. A client
//! resumes after a disconnect from its last index + 1.

use super::AdminService;
use crate::api::convert;
use corral_model::{EventRecord, Principal, Reads};
use corral_store::StateMachineStore;
use corral_wire::pb;
use std::pin::Pin;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Events buffered per Watch stream before the sender waits for the client.
const WATCH_BUFFER: usize = 256;

pub(super) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

pub(super) async fn watch(
    admin: &AdminService,
    request: Request<pb::WatchRequest>,
) -> Result<Response<WatchStream>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let slot = admin.watch_slots.take(
        &principal,
        crate::api::stream_slots::MAX_WATCH_STREAMS_PER_PRINCIPAL,
        "Watch",
    )?;
    let from_index = request.get_ref().from_index;
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
    let state_machine = admin.state_machine.clone();
    tokio::spawn(async move {
        // Held while the stream runs. It ends as soon as the client goes away, not at
        // the next event it may see (a quiet tenant's watcher could wait for ever).
        let _slot = slot;
        let client = sender.clone();
        tokio::select! {
            () = stream_events(state_machine, principal, from_index, sender) => {}
            () = client.closed() => {}
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
    )))
}

/// Events read from the state per catch-up step.
const CATCH_UP_BATCH: usize = 1_000;

fn visible(principal: &Principal, record: &EventRecord) -> bool {
    match principal.reads() {
        Reads::Everything => true,
        Reads::Tenant(tenant) => record.tenant == Some(tenant),
        Reads::Nothing => false,
    }
}

/// Read retained events from `next_index` on; returns the next index to ask for.
fn catch_up(
    state_machine: &StateMachineStore,
    principal: &Principal,
    next_index: u64,
) -> Result<(Vec<pb::Event>, u64), Status> {
    state_machine.read(|state| {
        let records = state
            .events_since(principal, next_index, CATCH_UP_BATCH)
            .map_err(|error| convert::query_error_to_status(&error))?;
        let next = records.last().map_or(next_index, |record| record.index + 1);
        Ok((
            records.into_iter().map(convert::event_to_proto).collect(),
            next,
        ))
    })
}

/// Sends every retained event from `next_index` on, a batch at a time, until a batch
/// comes back short (the reader is level with the state). Returns the next index to
/// send, or `None` once the subscriber is gone or an error was sent.
async fn send_retained(
    state_machine: &StateMachineStore,
    principal: &Principal,
    mut next_index: u64,
    sender: &mpsc::Sender<Result<pb::Event, Status>>,
) -> Option<u64> {
    loop {
        match catch_up(state_machine, principal, next_index) {
            Ok((events, next)) => {
                let caught_up = events.len() < CATCH_UP_BATCH;
                for event in events {
                    if sender.send(Ok(event)).await.is_err() {
                        return None;
                    }
                }
                next_index = next;
                if caught_up {
                    return Some(next_index);
                }
            }
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return None;
            }
        }
    }
}

async fn stream_events(
    state_machine: StateMachineStore,
    principal: Principal,
    from_index: u64,
    sender: mpsc::Sender<Result<pb::Event, Status>>,
) {
    // Subscribe before catching up so nothing applied in between is missed; duplicates
    // are skipped by index.
    let mut applied = state_machine.subscribe();
    let Some(mut next_index) = send_retained(&state_machine, &principal, from_index, &sender).await
    else {
        return;
    };
    loop {
        match applied.recv().await {
            Ok(batch) => {
                for record in batch
                    .iter()
                    .filter(|record| record.index >= next_index && visible(&principal, record))
                {
                    if sender
                        .send(Ok(convert::event_to_proto(record)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if let Some(last) = batch.last() {
                    next_index = next_index.max(last.index + 1);
                }
            }
            Err(RecvError::Lagged(_)) => {
                // Fell behind the broadcast: read everything that was missed from the
                // state, however many batches it takes. (Reading one batch here skipped
                // whatever lay between it and the oldest broadcast still buffered.)
                match send_retained(&state_machine, &principal, next_index, &sender).await {
                    Some(next) => next_index = next,
                    None => return,
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
