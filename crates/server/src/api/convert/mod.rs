//! Conversion between the admin API's protobuf messages (`corral_wire::pb`) and
//! corral's domain model.
//!
//! Requests become model values or whole `Command`s; every check here is about shape
//! (known enum strings, list lengths and string sizes from `corral_model::limits`, ids
//! that must be set), and fails with `INVALID_ARGUMENT` naming the field and the reason.
//! Rules that need the replicated state stay in the state machine. Model values and
//! query results become response messages. Nothing here does IO, and no input panics.

mod assignments;
mod audit;
mod bills;
mod bounds;
mod events;
mod flavors;
mod ids;
mod job_specs;
mod jobs;
mod names;
mod networks;
mod nodes;
mod pools;
mod queues;
mod resources;
mod status;
mod tenants;
#[cfg(test)]
mod tests;

pub use assignments::{may_change_assignments, node_assignments};
pub use audit::{audit_filter_from_proto, audit_record_to_proto, DEFAULT_AUDIT_PAGE};
pub use bills::{
    bill_line_to_proto, bill_query_from_proto, bill_subject_text, bill_summary_to_proto,
};
pub use bounds::page_limit;
pub use events::{event_detail, event_kind, event_to_proto};
pub use flavors::{command_from_define_flavor, flavor_from_proto, flavor_to_proto};
pub use ids::{optional_id, required_id};
pub use job_specs::{
    job_spec_from_proto, job_spec_to_proto, job_spec_to_proto_with, Secrets, REDACTED,
};
pub use jobs::{
    command_from_change_priority, command_from_job_spec, command_from_start_job,
    command_from_stop_job, command_from_submit_job, command_from_terminate_job,
    job_filter_from_proto, job_view_to_proto, job_view_to_proto_with, replica_to_proto,
    submit_jobs_from_proto, MAX_JOBS_PER_SUBMIT,
};
pub use names::{
    billing_from_proto, billing_to_proto, job_kind_from_name, job_state_from_name, job_state_name,
    job_type_from_name, job_type_name, job_types_from_proto, job_types_to_proto,
    node_status_from_name, node_status_name, optional_job_kind_label, optional_job_state,
    optional_node_status, optional_pool_status, pool_kind_from_name, pool_kind_name,
    pool_status_from_name, pool_status_name, replica_state_name, taint_effect_from_name,
    taint_effect_name, upgrade_mode_from_name, upgrade_mode_from_proto, upgrade_mode_name,
    JobKindName, PoolKindName, ALL_JOB_STATES, ALL_NODE_STATUSES, ALL_POOL_STATUSES,
    ALL_TAINT_EFFECTS, ALL_UPGRADE_MODES,
};
pub use networks::{
    command_from_create_network, command_from_delete_network, command_from_set_network_storage,
    network_to_proto,
};
pub use nodes::{
    command_from_cordon_node, command_from_delete_node, command_from_drain_node,
    command_from_lock_node, command_from_register_node, command_from_set_node_labels,
    command_from_set_node_standby, command_from_set_node_taints, command_from_uncordon_node,
    command_from_unlock_node, labels_from_proto, node_filter_from_proto, node_register_from_proto,
    node_to_proto, taint_to_proto, taints_from_proto,
};
pub use pools::{
    command_from_cancel_driver_upgrade, command_from_create_pool, command_from_delete_pool,
    command_from_renew_pool, command_from_request_driver_upgrade, command_from_scale_pool,
    command_from_set_pool_job_types, driver_spec_from_proto, driver_spec_to_proto,
    pool_create_from_proto, pool_filter_from_proto, pool_flavors_from_proto, pool_to_proto,
};
pub use queues::{
    command_from_create_queue, command_from_delete_queue, command_from_update_queue,
    queue_spec_from_proto, queue_view_to_proto,
};
pub use resources::{resources_from_proto, resources_to_proto};
pub use status::{invalid_argument, query_error_to_status, rejection_code, rejection_to_status};
pub use tenants::{
    command_from_create_tenant, command_from_create_token, command_from_delete_tenant,
    command_from_revoke_token, command_from_rotate_token, command_from_set_tenant_quota,
    tenant_to_proto, token_to_proto,
};
