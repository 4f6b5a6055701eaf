//! The strings of the API for the model's enums, both ways. Parsing is ASCII
//! case-insensitive; an unknown string is `INVALID_ARGUMENT` naming the field and
//! listing the accepted values. Statuses and states use the model's variant names
//! (`Running`, `CreationFailed`, ...); kinds and modes use lowercase words.

use super::bounds::echo;
use super::status::invalid_argument;
use corral_model::job::ALL_JOB_TYPES;
use corral_model::limits::MAX_PREPAID_MONTHS;
use corral_model::pool::UpgradeMode;
use corral_model::{
    BillingMode, JobKind, JobState, JobType, NodeStatus, PoolKind, PoolStatus, ReplicaState,
    TaintEffect,
};
use corral_wire::pb;
use std::collections::BTreeSet;
use tonic::Status;

/// The kind of a job spec without its settings, as named in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKindName {
    Training,
    Inference,
    Notebook,
    Workflow,
}

impl JobKindName {
    pub const ALL: [JobKindName; 4] = [
        JobKindName::Training,
        JobKindName::Inference,
        JobKindName::Notebook,
        JobKindName::Workflow,
    ];

    /// The same word as `JobKind::label`.
    pub fn label(self) -> &'static str {
        match self {
            JobKindName::Training => "training",
            JobKindName::Inference => "inference",
            JobKindName::Notebook => "notebook",
            JobKindName::Workflow => "workflow",
        }
    }

    pub fn of(kind: &JobKind) -> JobKindName {
        match kind {
            JobKind::Training { .. } => JobKindName::Training,
            JobKind::Inference => JobKindName::Inference,
            JobKind::Notebook { .. } => JobKindName::Notebook,
            JobKind::Workflow(_) => JobKindName::Workflow,
        }
    }
}

/// The kind of a pool to create, as named in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKindName {
    Public,
    Dedicated,
}

impl PoolKindName {
    pub const ALL: [PoolKindName; 2] = [PoolKindName::Public, PoolKindName::Dedicated];

    pub fn label(self) -> &'static str {
        match self {
            PoolKindName::Public => "public",
            PoolKindName::Dedicated => "dedicated",
        }
    }
}

pub const ALL_UPGRADE_MODES: [UpgradeMode; 2] = [UpgradeMode::Secure, UpgradeMode::Forcible];

pub const ALL_TAINT_EFFECTS: [TaintEffect; 3] = [
    TaintEffect::NoSchedule,
    TaintEffect::PreferNoSchedule,
    TaintEffect::NoExecute,
];

pub const ALL_POOL_STATUSES: [PoolStatus; 9] = [
    PoolStatus::Creating,
    PoolStatus::Running,
    PoolStatus::Abnormal,
    PoolStatus::Deleting,
    PoolStatus::Error,
    PoolStatus::CreationFailed,
    PoolStatus::ScalingFailed,
    PoolStatus::Waiting,
    PoolStatus::Frozen,
];

pub const ALL_NODE_STATUSES: [NodeStatus; 5] = [
    NodeStatus::Creating,
    NodeStatus::Available,
    NodeStatus::Abnormal,
    NodeStatus::Deleting,
    NodeStatus::Checking,
];

pub const ALL_JOB_STATES: [JobState; 12] = [
    JobState::Creating,
    JobState::Pending,
    JobState::Deploying,
    JobState::Running,
    JobState::Concerning,
    JobState::Completed,
    JobState::Failed,
    JobState::Terminating,
    JobState::Terminated,
    JobState::Abnormal,
    JobState::Stopping,
    JobState::Stopped,
];

/// The value of `choices` whose name equals `text`, ignoring ASCII case.
fn choose<T: Copy>(
    field: &str,
    text: &str,
    choices: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, Status> {
    choices
        .iter()
        .copied()
        .find(|choice| name(*choice).eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|choice| name(*choice)).collect();
            invalid_argument(
                field,
                format!("'{}' is not one of {}", echo(text), names.join(", ")),
            )
        })
}

/// `None` for the empty string (an unset filter), otherwise `parse(text)`.
pub fn optional_name<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, Status>,
) -> Result<Option<T>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

pub fn job_kind_from_name(field: &str, text: &str) -> Result<JobKindName, Status> {
    choose(field, text, &JobKindName::ALL, JobKindName::label)
}

pub fn job_type_name(job_type: JobType) -> &'static str {
    match job_type {
        JobType::Training => "training",
        JobType::Inference => "inference",
        JobType::Notebook => "notebook",
    }
}

pub fn job_type_from_name(field: &str, text: &str) -> Result<JobType, Status> {
    choose(field, text, &ALL_JOB_TYPES, job_type_name)
}

/// A pool's job types (field `job_types`); each may be listed once.
pub fn job_types_from_proto(names: &[String]) -> Result<BTreeSet<JobType>, Status> {
    let field = "job_types";
    if names.len() > ALL_JOB_TYPES.len() {
        return Err(invalid_argument(
            field,
            format!(
                "must have at most {} entries (got {})",
                ALL_JOB_TYPES.len(),
                names.len()
            ),
        ));
    }
    let mut job_types = BTreeSet::new();
    for (index, name) in names.iter().enumerate() {
        let entry_field = format!("{field}[{index}]");
        let job_type = job_type_from_name(&entry_field, name)?;
        if !job_types.insert(job_type) {
            return Err(invalid_argument(
                &entry_field,
                format!("'{}' is listed twice", job_type_name(job_type)),
            ));
        }
    }
    Ok(job_types)
}

pub fn job_types_to_proto(job_types: &BTreeSet<JobType>) -> Vec<String> {
    job_types
        .iter()
        .map(|job_type| job_type_name(*job_type).to_string())
        .collect()
}

pub fn pool_kind_from_name(field: &str, text: &str) -> Result<PoolKindName, Status> {
    choose(field, text, &PoolKindName::ALL, PoolKindName::label)
}

pub fn pool_kind_name(kind: &PoolKind) -> &'static str {
    match kind {
        PoolKind::Public => PoolKindName::Public.label(),
        PoolKind::Dedicated { .. } => PoolKindName::Dedicated.label(),
    }
}

const PAY_PER_USE: &str = "pay-per-use";
const PREPAID: &str = "prepaid";

/// A missing `Billing` or an empty mode is pay-per-use; only prepaid takes a period
/// (1..=`MAX_PREPAID_MONTHS` months) and auto-renewal.
pub fn billing_from_proto(billing: Option<&pb::Billing>) -> Result<BillingMode, Status> {
    let Some(billing) = billing else {
        return Ok(BillingMode::PayPerUse);
    };
    let prepaid = match billing.mode.as_str() {
        "" => false,
        mode if mode.eq_ignore_ascii_case(PAY_PER_USE) => false,
        mode if mode.eq_ignore_ascii_case(PREPAID) => true,
        mode => {
            return Err(invalid_argument(
                "billing.mode",
                format!("'{}' is not one of {PAY_PER_USE}, {PREPAID}", echo(mode)),
            ))
        }
    };
    if !prepaid {
        if billing.period_months != 0 || billing.auto_renew {
            return Err(invalid_argument(
                "billing.period_months",
                "only prepaid pools have a period and auto-renewal",
            ));
        }
        return Ok(BillingMode::PayPerUse);
    }
    if billing.period_months == 0 || billing.period_months > MAX_PREPAID_MONTHS {
        return Err(invalid_argument(
            "billing.period_months",
            format!("must be 1..={MAX_PREPAID_MONTHS} for a prepaid pool"),
        ));
    }
    Ok(BillingMode::Prepaid {
        period_months: billing.period_months,
        auto_renew: billing.auto_renew,
    })
}

pub fn billing_to_proto(billing: &BillingMode) -> pb::Billing {
    match billing {
        BillingMode::PayPerUse => pb::Billing {
            mode: PAY_PER_USE.to_string(),
            period_months: 0,
            auto_renew: false,
        },
        BillingMode::Prepaid {
            period_months,
            auto_renew,
        } => pb::Billing {
            mode: PREPAID.to_string(),
            period_months: *period_months,
            auto_renew: *auto_renew,
        },
    }
}

pub fn upgrade_mode_name(mode: UpgradeMode) -> &'static str {
    match mode {
        UpgradeMode::Secure => "secure",
        UpgradeMode::Forcible => "forcible",
    }
}

pub fn upgrade_mode_from_name(field: &str, text: &str) -> Result<UpgradeMode, Status> {
    choose(field, text, &ALL_UPGRADE_MODES, upgrade_mode_name)
}

pub fn taint_effect_name(effect: TaintEffect) -> &'static str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

pub fn taint_effect_from_name(field: &str, text: &str) -> Result<TaintEffect, Status> {
    choose(field, text, &ALL_TAINT_EFFECTS, taint_effect_name)
}

pub fn pool_status_name(status: PoolStatus) -> &'static str {
    match status {
        PoolStatus::Creating => "Creating",
        PoolStatus::Running => "Running",
        PoolStatus::Abnormal => "Abnormal",
        PoolStatus::Deleting => "Deleting",
        PoolStatus::Error => "Error",
        PoolStatus::CreationFailed => "CreationFailed",
        PoolStatus::ScalingFailed => "ScalingFailed",
        PoolStatus::Waiting => "Waiting",
        PoolStatus::Frozen => "Frozen",
    }
}

pub fn pool_status_from_name(field: &str, text: &str) -> Result<PoolStatus, Status> {
    choose(field, text, &ALL_POOL_STATUSES, pool_status_name)
}

pub fn node_status_name(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Creating => "Creating",
        NodeStatus::Available => "Available",
        NodeStatus::Abnormal => "Abnormal",
        NodeStatus::Deleting => "Deleting",
        NodeStatus::Checking => "Checking",
    }
}

pub fn node_status_from_name(field: &str, text: &str) -> Result<NodeStatus, Status> {
    choose(field, text, &ALL_NODE_STATUSES, node_status_name)
}

pub fn job_state_name(state: JobState) -> &'static str {
    match state {
        JobState::Creating => "Creating",
        JobState::Pending => "Pending",
        JobState::Deploying => "Deploying",
        JobState::Running => "Running",
        JobState::Concerning => "Concerning",
        JobState::Completed => "Completed",
        JobState::Failed => "Failed",
        JobState::Terminating => "Terminating",
        JobState::Terminated => "Terminated",
        JobState::Abnormal => "Abnormal",
        JobState::Stopping => "Stopping",
        JobState::Stopped => "Stopped",
    }
}

pub fn job_state_from_name(field: &str, text: &str) -> Result<JobState, Status> {
    choose(field, text, &ALL_JOB_STATES, job_state_name)
}

/// The replica's state without its exit code (which has a field of its own).
pub fn replica_state_name(state: &ReplicaState) -> &'static str {
    match state {
        ReplicaState::Unplaced => "Unplaced",
        ReplicaState::Assigned => "Assigned",
        ReplicaState::Running => "Running",
        ReplicaState::Exited { .. } => "Exited",
    }
}

/// List filter `status` of pools: empty is no filter.
pub fn optional_pool_status(text: &str) -> Result<Option<PoolStatus>, Status> {
    optional_name(text, |text| pool_status_from_name("status", text))
}

/// List filter `status` of nodes: empty is no filter.
pub fn optional_node_status(text: &str) -> Result<Option<NodeStatus>, Status> {
    optional_name(text, |text| node_status_from_name("status", text))
}

/// List filter `state` of jobs: empty is no filter.
pub fn optional_job_state(text: &str) -> Result<Option<JobState>, Status> {
    optional_name(text, |text| job_state_from_name("state", text))
}

/// List filter `kind` of jobs as the label `JobFilter` compares with
/// (`JobKind::label`); empty is no filter.
pub fn optional_job_kind_label(text: &str) -> Result<Option<String>, Status> {
    Ok(
        optional_name(text, |text| job_kind_from_name("kind", text))?
            .map(|kind| kind.label().to_string()),
    )
}

/// The `mode` of a driver upgrade request; empty is `secure`, the mode that
/// interrupts no work.
pub fn upgrade_mode_from_proto(text: &str) -> Result<UpgradeMode, Status> {
    Ok(
        optional_name(text, |text| upgrade_mode_from_name("mode", text))?
            .unwrap_or(UpgradeMode::Secure),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Debug;
    use tonic::Code;

    /// Every value maps to a distinct name that parses back, in any ASCII case.
    fn check_both_ways<T: Copy + PartialEq + Debug>(
        all: &[T],
        name: fn(T) -> &'static str,
        parse: fn(&str, &str) -> Result<T, Status>,
    ) {
        let names: BTreeSet<&str> = all.iter().map(|value| name(*value)).collect();
        assert_eq!(names.len(), all.len(), "names are distinct");
        for value in all {
            assert_eq!(parse("field", name(*value)).unwrap(), *value);
            assert_eq!(
                parse("field", &name(*value).to_uppercase()).unwrap(),
                *value
            );
            assert_eq!(
                parse("field", &name(*value).to_lowercase()).unwrap(),
                *value
            );
        }
        for bad in ["", "bogus", "Running!", " secure"] {
            if let Err(status) = parse("field", bad) {
                assert_eq!(status.code(), Code::InvalidArgument);
                assert!(
                    status.message().starts_with("invalid field:"),
                    "{}",
                    status.message()
                );
            } else {
                assert!(names.iter().any(|name| name.eq_ignore_ascii_case(bad)));
            }
        }
    }

    #[test]
    fn every_enum_maps_both_ways() {
        check_both_ways(&JobKindName::ALL, JobKindName::label, job_kind_from_name);
        check_both_ways(&ALL_JOB_TYPES, job_type_name, job_type_from_name);
        check_both_ways(&PoolKindName::ALL, PoolKindName::label, pool_kind_from_name);
        check_both_ways(
            &ALL_UPGRADE_MODES,
            upgrade_mode_name,
            upgrade_mode_from_name,
        );
        check_both_ways(
            &ALL_TAINT_EFFECTS,
            taint_effect_name,
            taint_effect_from_name,
        );
        check_both_ways(&ALL_POOL_STATUSES, pool_status_name, pool_status_from_name);
        check_both_ways(&ALL_NODE_STATUSES, node_status_name, node_status_from_name);
        check_both_ways(&ALL_JOB_STATES, job_state_name, job_state_from_name);
    }

    #[test]
    fn status_and_state_names_are_the_debug_names() {
        for status in ALL_POOL_STATUSES {
            assert_eq!(pool_status_name(status), format!("{status:?}"));
        }
        for status in ALL_NODE_STATUSES {
            assert_eq!(node_status_name(status), format!("{status:?}"));
        }
        for state in ALL_JOB_STATES {
            assert_eq!(job_state_name(state), format!("{state:?}"));
        }
        for effect in ALL_TAINT_EFFECTS {
            assert_eq!(taint_effect_name(effect), format!("{effect:?}"));
        }
        let kinds = [
            JobKind::Training { retry_limit: 1 },
            JobKind::Inference,
            JobKind::Notebook {
                auto_stop_after_ms: None,
            },
            JobKind::Workflow(corral_model::WorkflowSpec { steps: vec![] }),
        ];
        for kind in &kinds {
            assert_eq!(JobKindName::of(kind).label(), kind.label());
        }
        for job_type in ALL_JOB_TYPES {
            assert_eq!(
                job_type_name(job_type),
                format!("{job_type:?}").to_lowercase()
            );
        }
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let status = job_kind_from_name("kind", "batch").unwrap_err();
        assert_eq!(
            status.message(),
            "invalid kind: 'batch' is not one of training, inference, notebook, workflow"
        );
        let long = "x".repeat(10_000);
        assert!(
            pool_status_from_name("status", &long)
                .unwrap_err()
                .message()
                .len()
                < 300
        );
    }

    #[test]
    fn job_type_lists() {
        let names = vec!["training".to_string(), "Notebook".to_string()];
        let job_types = job_types_from_proto(&names).unwrap();
        assert_eq!(
            job_types,
            BTreeSet::from([JobType::Training, JobType::Notebook])
        );
        assert_eq!(job_types_to_proto(&job_types), vec!["training", "notebook"]);
        let twice = vec!["training".to_string(), "training".to_string()];
        assert!(job_types_from_proto(&twice)
            .unwrap_err()
            .message()
            .starts_with("invalid job_types[1]:"));
        let too_many = vec!["training".to_string(); 4];
        assert!(job_types_from_proto(&too_many).is_err());
        let unknown = vec!["workflow".to_string()];
        assert!(job_types_from_proto(&unknown)
            .unwrap_err()
            .message()
            .starts_with("invalid job_types[0]:"));
    }

    #[test]
    fn billing_modes() {
        assert_eq!(billing_from_proto(None).unwrap(), BillingMode::PayPerUse);
        let prepaid = BillingMode::Prepaid {
            period_months: 6,
            auto_renew: true,
        };
        for mode in [BillingMode::PayPerUse, prepaid] {
            assert_eq!(
                billing_from_proto(Some(&billing_to_proto(&mode))).unwrap(),
                mode
            );
        }
        let empty = pb::Billing::default();
        assert_eq!(
            billing_from_proto(Some(&empty)).unwrap(),
            BillingMode::PayPerUse
        );
        let zero_period = pb::Billing {
            mode: "prepaid".into(),
            ..Default::default()
        };
        assert!(billing_from_proto(Some(&zero_period))
            .unwrap_err()
            .message()
            .starts_with("invalid billing.period_months:"));
        let long_period = pb::Billing {
            mode: "prepaid".into(),
            period_months: MAX_PREPAID_MONTHS + 1,
            auto_renew: false,
        };
        assert!(billing_from_proto(Some(&long_period)).is_err());
        let pay_per_use_period = pb::Billing {
            mode: "pay-per-use".into(),
            period_months: 1,
            auto_renew: false,
        };
        assert!(billing_from_proto(Some(&pay_per_use_period)).is_err());
        let unknown = pb::Billing {
            mode: "monthly".into(),
            ..Default::default()
        };
        assert!(billing_from_proto(Some(&unknown))
            .unwrap_err()
            .message()
            .starts_with("invalid billing.mode:"));
    }
}
