//! Reports to the managers (replica started/exited, driver versions): a bounded FIFO
//! queue per node and one sender that delivers them, retrying each until a manager
//! acknowledges it. `ReportAck.applied == false` means the report is stale (e.g. the
//! replica was placed elsewhere meanwhile) and it is dropped; so is a report a manager
//! refuses as malformed.
//!
//! The sender takes what is queued (up to `MAX_REPORTS_IN_FLIGHT`) as one batch and
//! splits it by subject — one replica placement, or the node's drivers. Subjects are
//! sent concurrently (the managers commit concurrent writes in one raft append, so a
//! busy node's reports do not wait for one round trip each); the reports of one
//! subject go strictly in order, and a batch ends before the next begins, so a
//! replica's started report always reaches the managers before its exited report.

use crate::managers::link::{Failure, ManagerLink};
use crate::wire::pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;
use tracing::{debug, error, warn};

/// Reports waiting per node at most; beyond, new reports are dropped (and counted).
pub(crate) const MAX_PENDING_REPORTS: usize = 4096;
/// Reports of one batch, i.e. at most this many calls in flight per node.
pub(crate) const MAX_REPORTS_IN_FLIGHT: usize = 64;

/// One report.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Report {
    Replica(pb::ReplicaReport),
    Driver(pb::DriverReport),
}

/// The sending side of a node's report queue.
#[derive(Clone, Debug)]
pub(crate) struct ReportQueue {
    sender: mpsc::Sender<Report>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side, drained by [`deliver`].
#[derive(Debug)]
pub(crate) struct ReportReceiver {
    receiver: mpsc::Receiver<Report>,
}

/// A queue of at most `capacity` reports.
pub(crate) fn report_queue(capacity: usize) -> (ReportQueue, ReportReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (
        ReportQueue {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        },
        ReportReceiver { receiver },
    )
}

impl ReportQueue {
    /// Queues a report without waiting; false (and an error log) when the queue is full.
    pub(crate) fn push(&self, report: Report) -> bool {
        match self.sender.try_send(report) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(report)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                error!("report queue full ({MAX_PENDING_REPORTS}), dropped {report:?} ({dropped} so far)");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Reports dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Whether a refused report should be dropped rather than retried: the manager judged
/// the report itself, so sending it again changes nothing.
fn is_definitive(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists
    )
}

/// What orders reports: those about one subject are delivered in queue order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Replica {
        job: u64,
        rank: u32,
        generation: u64,
    },
    Drivers,
}

fn subject_of(report: &Report) -> Subject {
    match report {
        Report::Replica(replica) => Subject::Replica {
            job: replica.job,
            rank: replica.rank,
            generation: replica.generation,
        },
        Report::Driver(_) => Subject::Drivers,
    }
}

/// Split a batch into per-subject chains, each in queue order.
fn chains(batch: Vec<Report>) -> Vec<Vec<Report>> {
    let mut by_subject: std::collections::BTreeMap<Subject, Vec<Report>> =
        std::collections::BTreeMap::new();
    for report in batch {
        by_subject
            .entry(subject_of(&report))
            .or_default()
            .push(report);
    }
    by_subject.into_values().collect()
}

/// Sends the queued reports until the queue's senders are all gone: batch by batch,
/// subjects concurrently, each subject in order (see the module documentation).
pub(crate) async fn deliver(
    mut receiver: ReportReceiver,
    link: Arc<ManagerLink>,
    max_backoff: Duration,
) {
    while let Some(first) = receiver.receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_REPORTS_IN_FLIGHT {
            match receiver.receiver.try_recv() {
                Ok(report) => batch.push(report),
                Err(_) => break,
            }
        }
        let sends = chains(batch).into_iter().map(|chain| {
            let link = link.clone();
            async move {
                for report in chain {
                    send_until_acknowledged(&link, &report, max_backoff).await;
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// One report, retried (following leaders, rotating managers, backing off up to
/// `max_backoff`) until acknowledged or refused for good.
async fn send_until_acknowledged(link: &ManagerLink, report: &Report, max_backoff: Duration) {
    let mut backoff = link.backoff(Duration::from_millis(50), max_backoff);
    loop {
        let result = match report {
            Report::Replica(replica) => {
                link.call(|mut stub| {
                    let replica = replica.clone();
                    async move { stub.report_replica(replica).await }
                })
                .await
            }
            Report::Driver(driver) => {
                link.call(|mut stub| {
                    let driver = driver.clone();
                    async move { stub.report_driver(driver).await }
                })
                .await
            }
        };
        match result {
            Ok(ack) => {
                if !ack.applied {
                    debug!("stale report dropped ({}): {report:?}", ack.reason);
                }
                return;
            }
            Err(status) if is_definitive(status.code()) => {
                warn!("report refused, dropped: {status}: {report:?}");
                return;
            }
            Err(status) => {
                if crate::managers::link::classify(&status) == Failure::Refused {
                    warn!("report not accepted, retrying: {status}");
                } else {
                    debug!("report not delivered, retrying: {status}");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, _receiver) = report_queue(2);
        let report = Report::Driver(pb::DriverReport::default());
        assert!(queue.push(report.clone()));
        assert!(queue.push(report.clone()));
        assert!(!queue.push(report));
        assert_eq!(queue.dropped(), 1);
    }

    fn replica(job: u64, rank: u32, started: bool) -> Report {
        let event = if started {
            pb::replica_report::Event::Started(pb::ReplicaStartedReport {
                pid: 1,
                master_port: 0,
            })
        } else {
            pb::replica_report::Event::Exited(pb::ReplicaExitedReport::default())
        };
        Report::Replica(pb::ReplicaReport {
            node: 1,
            job,
            rank,
            generation: 5,
            event: Some(event),
        })
    }

    #[test]
    fn a_batch_splits_by_subject_keeping_each_subject_in_order() {
        let batch = vec![
            replica(1, 0, true),
            replica(2, 0, true),
            Report::Driver(pb::DriverReport::default()),
            replica(1, 0, false),
            replica(1, 1, true),
            replica(2, 0, false),
        ];
        let chains = chains(batch);
        assert_eq!(
            chains,
            vec![
                vec![replica(1, 0, true), replica(1, 0, false)],
                vec![replica(1, 1, true)],
                vec![replica(2, 0, true), replica(2, 0, false)],
                vec![Report::Driver(pb::DriverReport::default())],
            ]
        );
    }

    #[test]
    fn only_judgements_of_the_report_drop_it() {
        assert!(is_definitive(Code::InvalidArgument));
        assert!(is_definitive(Code::NotFound));
        assert!(!is_definitive(Code::Unavailable));
        assert!(!is_definitive(Code::Unauthenticated));
        assert!(!is_definitive(Code::Internal));
    }
}
