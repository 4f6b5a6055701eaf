//! The model the client history is checked against: what a client may see of one job
//! (the partition key is the job's name). A job exists once its submit took effect, is
//! never shown as terminating or terminated before a termination took effect, and once
//! one did, is never shown as queued or running again.

use crate::history::{Call, Record, Reply};
use crate::linearizability::{Model, Operation, Outcome};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobModel {
    Absent,
    /// `job` is 0 when the submit's reply was lost (its id is unknown).
    Exists {
        job: u64,
        terminated: bool,
    },
}

pub struct JobsModel;

/// States a job may show before any termination took effect... and after one.
const TERMINATION_STATES: [&str; 2] = ["Terminating", "Terminated"];
const ACTIVE_STATES: [&str; 5] = ["Creating", "Pending", "Deploying", "Running", "Concerning"];

fn same_job(known: u64, asked: u64) -> bool {
    known == 0 || known == asked
}

impl Model for JobsModel {
    type State = JobModel;
    type Input = Call;
    type Output = Reply;
    type PartitionKey = String;

    fn init(&self) -> JobModel {
        JobModel::Absent
    }

    fn step(&self, state: &JobModel, call: &Call, reply: &Reply) -> Option<JobModel> {
        match (call, reply, state) {
            (_, Reply::Unknown, _) => Some(self.step_with_unknown_output(state, call)),
            (Call::Submit { .. }, Reply::Submitted { job }, JobModel::Absent) => {
                Some(JobModel::Exists {
                    job: *job,
                    terminated: false,
                })
            }
            (Call::Submit { .. }, Reply::Refused { .. }, _) => Some(state.clone()),
            (
                Call::Get { job, .. },
                Reply::Found { state: shown },
                JobModel::Exists {
                    job: known,
                    terminated,
                },
            ) if same_job(*known, *job) => {
                let consistent = if *terminated {
                    !ACTIVE_STATES.contains(&shown.as_str())
                } else {
                    !TERMINATION_STATES.contains(&shown.as_str())
                };
                consistent.then(|| state.clone())
            }
            (
                Call::Terminate { job, .. },
                Reply::Acknowledged,
                JobModel::Exists { job: known, .. },
            ) if same_job(*known, *job) => Some(JobModel::Exists {
                job: *job,
                terminated: true,
            }),
            // Terminating a job that already finished is refused and changes nothing.
            (
                Call::Terminate { job, .. },
                Reply::Refused { code, .. },
                JobModel::Exists { job: known, .. },
            ) if same_job(*known, *job) && code != "NotFound" => Some(state.clone()),
            _ => None,
        }
    }

    fn step_with_unknown_output(&self, state: &JobModel, call: &Call) -> JobModel {
        match (call, state) {
            (Call::Submit { .. }, JobModel::Absent) => JobModel::Exists {
                job: 0,
                terminated: false,
            },
            (Call::Terminate { .. }, JobModel::Exists { job, .. }) => JobModel::Exists {
                job: *job,
                terminated: true,
            },
            _ => state.clone(),
        }
    }

    fn partition_key(&self, call: &Call) -> String {
        call.job_name().to_string()
    }
}

/// The history as the checker's operations.
pub fn operations(records: &[Record]) -> Vec<Operation<Call, Reply>> {
    records
        .iter()
        .map(|record| match &record.reply {
            Reply::Unknown => {
                Operation::unknown_outcome(record.client, record.call.clone(), record.called_at_ns)
            }
            reply => Operation {
                client: record.client,
                input: record.call.clone(),
                output: Outcome::Returned(reply.clone()),
                call_at: record.called_at_ns,
                return_at: record.returned_at_ns,
            },
        })
        .collect()
}
