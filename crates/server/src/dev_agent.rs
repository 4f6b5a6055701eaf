//! The simulated agent of `corral dev`: reports every placed replica started, and a
//! training replica exited with code 0 after a fixed run time. It stands in for real node
//! agents so a first run shows jobs moving through their states.

use crate::proposer::Proposer;
use corral_model::{Command, Event, JobKind, Principal};
use corral_store::StateMachineStore;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

pub async fn run_simulated_agent(
    state_machine: StateMachineStore,
    proposer: Proposer,
    training_run_ms: u64,
) {
    let mut applied = state_machine.subscribe();
    loop {
        let batch = match applied.recv().await {
            Ok(batch) => batch,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        for record in batch.iter() {
            let Event::ReplicaAssigned { job, rank, node } = record.event else {
                continue;
            };
            let training = state_machine.read(|state| {
                state
                    .job(job)
                    .is_some_and(|job| matches!(job.spec.kind, JobKind::Training { .. }))
            });
            let proposer = proposer.clone();
            tokio::spawn(async move {
                let started = proposer
                    .propose(
                        Principal::Agent,
                        Command::ReplicaStarted { job, rank, node },
                    )
                    .await;
                if !matches!(started, Ok(ref outcome) if outcome.result.is_ok()) || !training {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(training_run_ms)).await;
                let exited = proposer
                    .propose(
                        Principal::Agent,
                        Command::ReplicaExited {
                            job,
                            rank,
                            node,
                            exit_code: 0,
                        },
                    )
                    .await;
                debug!(
                    "simulated exit of {job}/{rank}: {:?}",
                    exited.map(|outcome| outcome.result.is_ok())
                );
            });
        }
    }
}
