//! Reports to the managers (replica started/exited, driver versions): a bounded FIFO
//! queue per node and one sender that delivers them strictly in order, retrying each
//! until a manager acknowledges it. `ReportAck.applied == false` means the report is
//! stale (e.g. the replica was placed elsewhere meanwhile) and it is dropped; so is a
//! report a manager refuses as malformed. Being strictly FIFO, a replica's started
//! report always reaches the managers before its exited report.

use crate::manager_link::{Backoff, Failure, ManagerLink};
use corral_client::pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;
use tracing::{debug, error, warn};

/// Reports waiting per node at most; beyond, new reports are dropped (and counted).
pub const MAX_PENDING_REPORTS: usize = 4096;

/// One report.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Replica(pb::ReplicaReport),
    Driver(pb::DriverReport),
}

/// The sending side of a node's report queue.
#[derive(Clone, Debug)]
pub struct ReportQueue {
    sender: mpsc::Sender<Report>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side, drained by [`deliver`].
#[derive(Debug)]
pub struct ReportReceiver {
    receiver: mpsc::Receiver<Report>,
}

/// A queue of at most `capacity` reports.
pub fn report_queue(capacity: usize) -> (ReportQueue, ReportReceiver) {
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
    pub fn push(&self, report: Report) -> bool {
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
    pub fn dropped(&self) -> u64 {
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

/// Sends the queued reports in order until the queue's senders are all gone. Each is
/// retried (following leaders, rotating managers, backing off up to `max_backoff`)
/// until acknowledged.
pub async fn deliver(mut receiver: ReportReceiver, link: Arc<ManagerLink>, max_backoff: Duration) {
    let mut backoff = Backoff::new(Duration::from_millis(50), max_backoff);
    while let Some(report) = receiver.receiver.recv().await {
        loop {
            let result = match &report {
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
                    backoff.reset();
                    break;
                }
                Err(status) if is_definitive(status.code()) => {
                    warn!("report refused, dropped: {status}: {report:?}");
                    break;
                }
                Err(status) => {
                    if crate::manager_link::classify(&status) == Failure::Refused {
                        warn!("report not accepted, retrying: {status}");
                    } else {
                        debug!("report not delivered, retrying: {status}");
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
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

    #[test]
    fn only_judgements_of_the_report_drop_it() {
        assert!(is_definitive(Code::InvalidArgument));
        assert!(is_definitive(Code::NotFound));
        assert!(!is_definitive(Code::Unavailable));
        assert!(!is_definitive(Code::Unauthenticated));
        assert!(!is_definitive(Code::Internal));
    }
}
