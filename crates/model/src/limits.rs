//! Every bound in one place. A request, list or queue larger than these is refused
//! with `Rejection::LimitExceeded` before anything changes.

/// Dedicated pools one tenant may own (ModelArts: 50 per account).
pub const MAX_DEDICATED_POOLS_PER_TENANT: usize = 50;
/// Networks one tenant may own (ModelArts: 15).
pub const MAX_NETWORKS_PER_TENANT: usize = 15;
/// Storage endpoints attached to one network.
pub const MAX_STORAGE_ENDPOINTS: usize = 16;
/// Bytes of one storage endpoint.
pub const MAX_STORAGE_ENDPOINT_BYTES: usize = 256;
/// Flavors in one pool (ModelArts: 10).
pub const MAX_FLAVORS_PER_POOL: usize = 10;
/// Tags on one pool (ModelArts: 20).
pub const MAX_TAGS_PER_POOL: usize = 20;
pub const MAX_TAG_KEY_BYTES: usize = 128;
pub const MAX_TAG_VALUE_BYTES: usize = 255;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_DESCRIPTION_BYTES: usize = 512;
pub const MAX_LABELS_PER_NODE: usize = 32;
pub const MAX_TAINTS_PER_NODE: usize = 16;
pub const MAX_TOLERATIONS_PER_JOB: usize = 16;
pub const MAX_NODE_SELECTOR_LABELS: usize = 16;
pub const MAX_LABEL_BYTES: usize = 128;
pub const MAX_DRIVER_VERSION_BYTES: usize = 64;
/// Largest output tail a failed driver upgrade's report carries.
pub const MAX_UPGRADE_OUTPUT_TAIL_BYTES: usize = 2048;
/// Most attempts an agent reports for one driver upgrade.
pub const MAX_UPGRADE_ATTEMPTS: u32 = 100;
pub const MAX_ACCELERATORS_PER_NODE: u32 = 64;
/// Nodes in the platform inventory.
pub const MAX_NODES: usize = 100_000;
pub const MAX_NODES_PER_POOL_FLAVOR: u32 = 10_000;
pub const MAX_TENANTS: usize = 10_000;
pub const MAX_FLAVORS: usize = 1_000;
pub const MAX_TOKENS_PER_TENANT: usize = 32;
pub const MAX_TOKEN_HASH_BYTES: usize = 128;
/// Platform tokens (admin, auditor, bootstrap) outside any tenant; node credentials are
/// bounded by `MAX_NODES`.
pub const MAX_PLATFORM_TOKENS: usize = 1_024;
/// A token's life when its creator names none: 90 days.
pub const DEFAULT_TOKEN_TTL_MS: u64 = 90 * 24 * 60 * 60 * 1_000;
/// The longest life a tenant or bootstrap token may be given: 400 days.
pub const MAX_TOKEN_TTL_MS: u64 = 400 * 24 * 60 * 60 * 1_000;
/// A bootstrap token's life when its creator names none: one hour.
pub const DEFAULT_BOOTSTRAP_TTL_MS: u64 = 60 * 60 * 1_000;
/// How long a rotated-out secret may keep working: at most 7 days.
pub const MAX_ROTATION_GRACE_MS: u64 = 7 * 24 * 60 * 60 * 1_000;
/// Nodes one bootstrap token may register (a simulated agent registers many).
pub const MAX_BOOTSTRAP_USES: u32 = 10_000;
/// Jobs that are not yet terminal, over the whole cluster.
pub const MAX_ACTIVE_JOBS: usize = 1_000_000;
/// Jobs of one tenant that are not yet terminal, so that no tenant can fill
/// `MAX_ACTIVE_JOBS` alone.
pub const MAX_ACTIVE_JOBS_PER_TENANT: usize = 100_000;
/// Terminal jobs kept for queries before the oldest are forgotten.
pub const MAX_FINISHED_JOBS_RETAINED: usize = 100_000;
pub const MAX_REPLICAS_PER_JOB: u32 = 1_024;
pub const MAX_COMMAND_ARGUMENTS: usize = 64;
pub const MAX_ARGUMENT_BYTES: usize = 4_096;
pub const MAX_ENVIRONMENT_VARIABLES: usize = 64;
pub const MAX_ENVIRONMENT_VALUE_BYTES: usize = 4_096;
pub const MAX_WORKFLOW_STEPS: usize = 64;
pub const MAX_WORKFLOW_DEPENDENCIES_PER_STEP: usize = 16;
/// Training retry count bounds (ModelArts: 1-128).
pub const MIN_RETRY_LIMIT: u32 = 1;
pub const MAX_RETRY_LIMIT: u32 = 128;
/// Restarts of one training job caused by infrastructure (node loss, agent restart,
/// drain, driver upgrade, eviction) rather than by the job itself. They spend no retry
/// of `retry_limit`; past this many, the fleet is flapping under the job and it fails
/// with a reason naming the last disruption.
pub const MAX_DISRUPTIONS_PER_JOB: u32 = 20;
/// Disruptions restarted at once; from the next one on, a job waits
/// `DISRUPTION_BACKOFF_BASE_MS * 2^(n - 1 - FREE)` (at most `MAX_DISRUPTION_BACKOFF_MS`)
/// before it may be placed again, so a flapping fleet is not hammered. The cap is short
/// on purpose: the job is not at fault, and once the fleet is healthy again its work
/// must be running again within seconds (the simulation's settle bound is 15 s); the
/// disruption count, not the wait, is what ends a job on a fleet that keeps failing.
pub const DISRUPTIONS_WITHOUT_BACKOFF: u32 = 3;
pub const DISRUPTION_BACKOFF_BASE_MS: u64 = 1_000;
pub const MAX_DISRUPTION_BACKOFF_MS: u64 = 4_000;
/// Nodes one `NodesLost` entry marks lost (the leader splits a larger loss).
pub const MAX_NODES_LOST_PER_ENTRY: usize = 10_000;
pub const MIN_PRIORITY: u8 = 1;
pub const MAX_PRIORITY: u8 = 3;
/// Placements in one scheduler plan command.
pub const MAX_PLACEMENTS_PER_PLAN: usize = 100_000;
/// Events kept for `events_since`; older ones are compacted away.
pub const MAX_EVENTS_RETAINED: usize = 200_000;
/// Bill lines kept; older ones are folded into per-tenant totals.
pub const MAX_BILL_LINES_RETAINED: usize = 1_000_000;
/// Client requests whose outcome the state machine remembers for one principal (a
/// retry arrives within seconds, long before this many newer requests of its own).
pub const MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL: usize = 50_000;
/// Remembered requests over all principals; past it, the principal holding the most
/// forgets its oldest, so no principal can evict another's (`corral_state::requests`).
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;
/// Audit records kept; the oldest are dropped first.
pub const MAX_AUDIT_RECORDS: usize = 100_000;
/// Audit records older than this (by their entry's time) are dropped: 30 days.
pub const MAX_AUDIT_AGE_MS: u64 = 30 * DAY_MS;
/// Items returned by one list query.
pub const MAX_LIST_PAGE: usize = 10_000;
/// Highest hourly price of one node, in micro-units (1,000 currency units an hour). With
/// every node of the inventory prepaid for the longest period one charge stays far
/// below `u64::MAX`, so bills and ledger totals cannot overflow.
pub const MAX_PRICE_MICROS_PER_HOUR: u64 = 1_000_000_000;
/// Prepaid periods, in months (ModelArts sells 1-9 months or 1-3 years).
pub const MAX_PREPAID_MONTHS: u32 = 36;
/// A frozen pool is kept this long, then deleted.
pub const FROZEN_RETENTION_MS: u64 = 15 * DAY_MS;
pub const MAX_RUNTIME_MS: u64 = 365 * DAY_MS;
pub const MAX_AUTO_STOP_MS: u64 = 30 * DAY_MS;
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// One billing month; prepaid periods are counted in these.
pub const MONTH_MS: u64 = 30 * DAY_MS;
pub const HOUR_MS: u64 = 60 * 60 * 1000;
/// Queues in one pool.
pub const MAX_QUEUES_PER_POOL: usize = 64;
/// Member tenants of one queue.
pub const MAX_MEMBERS_PER_QUEUE: usize = 256;
/// Largest weight of a queue.
pub const MAX_QUEUE_WEIGHT: u32 = 1_000;
