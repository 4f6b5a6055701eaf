//! The command line: global flags and the command tree (clap derive).

use crate::parse;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the call failed (any other error)
  2  usage error: bad flags or arguments, unreadable --file
  3  unauthenticated: missing or invalid token
  4  permission denied
  5  not found
  6  the cluster could not be reached or did not answer in time

Environment:
  CORRAL_ADDR      manager addresses (like --addr)
  CORRAL_TOKEN     bearer token (like --token)
  CORRAL_CA_FILE   the cluster CA to check managers against (like --ca-file)
  CORRAL_CERT_FILE, CORRAL_KEY_FILE  a client certificate (like --cert-file, --key-file)

Ids may be written with or without their prefix: job-42 or 42, pool-3 or 3,
node-7, tenant-2, net-1.";

/// corral: a Raft-replicated manager of AI compute resource pools.
///
/// `corral server` and `corral dev` run a manager; every other command is a client of
/// the admin API of a running cluster.
#[derive(Parser, Debug)]
#[command(name = "corral", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Manager address(es), comma-separated; calls fail over between them and follow
    /// the leader. host:port and https://host:port speak TLS (give --ca-file);
    /// http://host:port speaks plaintext, only when written so.
    #[arg(
        long = "addr",
        env = "CORRAL_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:7070",
        global = true
    )]
    pub addresses: Vec<String>,
    /// Bearer token naming the caller. Prefer CORRAL_TOKEN or --token-file: a value on
    /// the command line is visible to every user of the machine (`ps`).
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file (e.g. a 0600 file).
    #[arg(
        long,
        env = "CORRAL_TOKEN_FILE",
        value_name = "FILE",
        global = true,
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// The cluster CA (PEM) the managers' certificates are checked against; TLS needs
    /// it (`corral dev` prints its path).
    #[arg(long, value_name = "FILE", env = "CORRAL_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present, with --key-file (optional: tokens
    /// identify people).
    #[arg(
        long,
        value_name = "FILE",
        env = "CORRAL_CERT_FILE",
        global = true,
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of --cert-file.
    #[arg(
        long,
        value_name = "FILE",
        env = "CORRAL_KEY_FILE",
        global = true,
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// Deadline of each call in milliseconds, retries included [default: 10000].
    #[arg(long, value_name = "MS", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    /// Read the answering replica's local state (fast, possibly stale) instead of a
    /// linearizable read.
    #[arg(long, global = true)]
    pub stale: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns with headers.
    Table,
    /// The API's messages as JSON (field names as in proto/admin.proto; ids as numbers).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one manager replica from a config file (until SIGINT/SIGTERM).
    Server(ServerArgs),
    /// Run the whole system in one process for a first try: replicas, simulated nodes,
    /// a public pool, a demo tenant and token.
    Dev(DevArgs),
    /// Run a node agent from a config file (until SIGINT/SIGTERM): it registers the
    /// node, heartbeats, runs the replicas assigned to it and serves their logs. Its
    /// replicas keep running when it stops and are adopted when it starts again.
    Agent(AgentArgs),
    /// The supervisor between an agent and one replica's workload (started by the
    /// agent, not by hand).
    #[command(hide = true)]
    AgentShim(AgentShimArgs),
    /// Tenants, their quotas and API tokens (platform admin).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API tokens: create, rotate, revoke, list (same as `tenant token`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Node flavors: hardware shapes and prices.
    #[command(subcommand)]
    Flavor(FlavorCommand),
    /// Tenant networks that dedicated pools attach to.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Resource pools: dedicated (one tenant) or public (shared).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Queues inside a pool: guarantees, limits, borrowing, members.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Compute nodes in the platform inventory.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Training jobs, inference services, notebooks and workflows.
    #[command(subcommand)]
    Job(JobCommand),
    /// Bills.
    #[command(subcommand)]
    Bill(BillCommand),
    /// Print the event log (and with --follow, new events as they happen).
    Events(EventsArgs),
    /// The audit trail: every write, who made it (principal and token), when, to what,
    /// and whether it was applied or refused and why.
    Audit(AuditArgs),
    /// The manager cluster: Raft status, membership, snapshots.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A development certificate authority and the certificates it signs (TLS).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print a shell completion script to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

// ---------- server and dev ----------

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The replica's config file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Admin port of the first replica (the others take the next ports) [default: 7070].
    #[arg(long)]
    pub port: Option<u16>,
    /// Where to keep the replicas' data [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of manager replicas: 1 or 3 [default: 3].
    #[arg(long, value_parser = parse::dev_replicas)]
    pub replicas: Option<u8>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The agent's config file (TOML), e.g. config/agent.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Run N virtual nodes named NAME-1..N in this one process, each in its own
    /// subdirectory of the work directory (for scale tests).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub simulate: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create a development CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600). Never
    /// overwrites one.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a certificate signed by the CA in --ca-dir: OUT/NAME.pem and
    /// OUT/NAME-key.pem (mode 0600), for both server and client use (a replica's port
    /// and its connections to peers; an agent).
    Issue {
        /// The directory `corral cert init` made.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The certificate's name (its common name and file name).
        #[arg(long)]
        name: String,
        /// A DNS name or IP address it is valid for (repeat) [default: localhost and
        /// 127.0.0.1].
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Where to write it.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The shim's arguments, parsed by the shim itself (`corral_agent::shim::parse_args`):
/// `--exit-file F --log-file L [--cgroup-procs F]... [--uid N --gid N] -- argv...`.
#[derive(Args, Debug)]
pub struct AgentShimArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "ARGS"
    )]
    pub args: Vec<std::ffi::OsString>,
}

// ---------- shared argument groups ----------

/// Amounts of each resource; what is not given is 0.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceArgs {
    /// CPU in millicores (1000 = one core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cpu_millicores: u64,
    /// Memory in MiB.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub memory_mib: u64,
    /// Accelerators (GPUs/NPUs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub accelerators: u32,
    /// Disk in GiB.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub disk_gib: u64,
    /// Network bandwidth in Mbit/s.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bandwidth_mbps: u64,
}

#[derive(Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitArg {
    /// At most this many items (the server caps it).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

// ---------- tenants ----------

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant with a quota.
    Create {
        /// Tenant name (lowercase letters, digits, hyphens).
        name: String,
        #[command(flatten)]
        quota: ResourceArgs,
        /// Allow the tenant's jobs priority 3.
        #[arg(long)]
        high_priority: bool,
    },
    /// List tenants with quota and use.
    List,
    /// Replace a tenant's whole quota (resources not given become 0).
    SetQuota {
        #[arg(value_parser = parse::tenant_id)]
        tenant: u64,
        #[command(flatten)]
        quota: ResourceArgs,
    },
    /// Delete a tenant.
    Delete {
        #[arg(value_parser = parse::tenant_id)]
        tenant: u64,
    },
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only this once).
    Create {
        /// Token name (used to rotate and revoke it).
        name: String,
        /// The tenant whose users the token stands for; omit for a platform token (a
        /// tenant admin's own tenant is the default for its tokens).
        #[arg(long, value_parser = parse::tenant_id)]
        tenant: Option<u64>,
        /// What the token may do [default: operator inside a tenant, platform-admin
        /// outside one].
        #[arg(long, value_enum)]
        role: Option<TokenRoleArg>,
        /// Life of the token, e.g. 90d, 12h, 30m [default: 90d for tenant tokens, 1h
        /// for node-bootstrap tokens, none for platform tokens].
        #[arg(long, value_parser = parse::duration_seconds, value_name = "DURATION")]
        ttl: Option<u64>,
        /// node-bootstrap only: how many nodes it may register [default: 1].
        #[arg(long)]
        uses: Option<u32>,
    },
    /// Give a token a new secret (printed once); the old one keeps working for --grace.
    Rotate {
        name: String,
        /// How long the old secret keeps working, e.g. 1h [default: 0, at once].
        #[arg(long, value_parser = parse::duration_seconds, value_name = "DURATION", default_value = "0s")]
        grace: u64,
    },
    /// Revoke a token by name; no replica accepts it afterwards.
    Revoke { name: String },
    /// List tokens (never their secrets): all for the platform admin and auditor, the
    /// tenant's own for a tenant admin.
    List,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRoleArg {
    /// Everything, platform-wide.
    PlatformAdmin,
    /// Reads everything, changes nothing.
    PlatformAuditor,
    /// A tenant's operator, and manages the tenant's tokens.
    Admin,
    /// Submits and manages a tenant's work.
    Operator,
    /// Reads a tenant's objects.
    Viewer,
    /// Registers nodes (`bootstrap_token_file` of an agent); each gets its own credential.
    NodeBootstrap,
}

// ---------- flavors ----------

#[derive(Subcommand, Debug)]
pub enum FlavorCommand {
    /// Define (or redefine) a flavor: the capacity and hourly price of one node.
    Define {
        /// Flavor name, e.g. gpu-8x-a100.
        name: String,
        #[command(flatten)]
        capacity: ResourceArgs,
        /// Accelerator type, e.g. nvidia-a100 (none for CPU-only flavors).
        #[arg(long)]
        accelerator_type: Option<String>,
        /// CPU architecture: x86_64 or aarch64.
        #[arg(long, default_value = "x86_64")]
        cpu_architecture: String,
        /// Price of one node for one hour, in micro-units of the currency.
        #[arg(long, value_name = "MICROS", default_value_t = 0)]
        price_micros_per_hour: u64,
    },
    /// List flavors.
    List,
}

// ---------- networks ----------

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network (CIDR within 172.16.0.0/12 or 192.168.0.0/16, /12 to /24).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        cidr: String,
        /// Owning tenant (a tenant's own token may omit it).
        #[arg(long, value_parser = parse::tenant_id)]
        tenant: Option<u64>,
    },
    /// List networks.
    List,
    /// Delete a network no pool uses.
    Delete {
        #[arg(value_parser = parse::network_id)]
        network: u64,
    },
    /// Attach storage endpoints to a network (replacing any; none given: detach all).
    /// Replicas of its pools get them in CORRAL_STORAGE_ENDPOINTS.
    Storage {
        #[arg(value_parser = parse::network_id)]
        network: u64,
        #[arg(value_name = "ENDPOINT")]
        endpoints: Vec<String>,
    },
}

// ---------- queues ----------

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Create a queue in a pool (platform admin for the public pool, the owner for a
    /// dedicated pool). The guarantees of a pool's queues together must fit its nodes.
    Create(QueueArgs),
    /// Replace a queue's guarantee, limit, weight, members and default mark.
    Update(QueueArgs),
    /// Delete a queue with no active jobs.
    Delete {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        name: String,
    },
    /// List a pool's queues: guarantee, limit, weight, members.
    List {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
    },
    /// Each queue of a pool now: guarantee, limit, use, borrowed, lent, pending jobs.
    Status {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
    },
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[arg(value_parser = parse::pool_id)]
    pub pool: u64,
    /// Queue name (lowercase letters, digits, hyphens), unique in the pool.
    pub name: String,
    /// Always granted: `cpu=MILLICORES,memory=MIB,gpu=N[,disk=GIB,bandwidth=MBPS]`;
    /// what is not named is 0.
    #[arg(long, value_name = "RESOURCES", value_parser = parse::queue_resources, default_value = "")]
    pub guarantee: parse::QueueResources,
    /// Never more, borrowing included (same form); what is not named has no bound.
    #[arg(long, value_name = "RESOURCES", value_parser = parse::queue_resources, default_value = "")]
    pub limit: parse::QueueResources,
    /// Weight, 1..=1000.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub weight: u32,
    /// A tenant that may submit to the queue (repeat; the owner of a dedicated pool
    /// always may).
    #[arg(long = "member", value_name = "TENANT", value_parser = parse::tenant_id)]
    pub members: Vec<u64>,
    /// Jobs of the pool that name no queue go to this one.
    #[arg(long)]
    pub default: bool,
}

// ---------- pools ----------

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKindArg {
    Dedicated,
    Public,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingArg {
    PayPerUse,
    Prepaid,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobTypeArg {
    Training,
    Inference,
    Notebook,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeModeArg {
    /// Drain each node first: wait for its jobs to finish, then upgrade.
    Secure,
    /// Upgrade at once; running jobs may fail.
    Forcible,
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool.
    Create(PoolCreateArgs),
    /// Show one pool.
    Get {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
    },
    /// List pools.
    List {
        /// Only pools of this tenant.
        #[arg(long, value_parser = parse::tenant_id)]
        owner: Option<u64>,
        /// Only pools with this status (Running, Creating, Abnormal, ...).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        limit: LimitArg,
    },
    /// Set the node count of one flavor and zone (scale out or in).
    Scale {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        /// The flavor, zone and new node count.
        #[arg(long, value_name = "NAME:ZONE:COUNT", value_parser = parse::pool_flavor)]
        flavor: corral_client::pb::PoolFlavor,
    },
    /// Delete a pool.
    Delete {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        /// Terminate the pool's active work first instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Set the job types a pool takes (replaces the current set).
    JobTypes {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        /// Job types, comma-separated.
        #[arg(value_enum, value_delimiter = ',', required = true)]
        job_types: Vec<JobTypeArg>,
    },
    /// Upgrade the GPU/NPU drivers of a pool's nodes.
    UpgradeDriver {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        #[arg(long, value_name = "VERSION")]
        gpu_driver: Option<String>,
        #[arg(long, value_name = "VERSION")]
        npu_driver: Option<String>,
        #[arg(long, value_enum, default_value_t = UpgradeModeArg::Secure)]
        mode: UpgradeModeArg,
        /// Nodes upgraded at a time (also the most made unavailable at once). Default 1.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "batch_percent")]
        batch_size: Option<u32>,
        /// Instead of --batch-size: this percentage of the pool's nodes, rounded up.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        batch_percent: Option<u32>,
    },
    /// End a pool's driver upgrade where it stands: isolated nodes are released and
    /// the pool's declared drivers return to what they were.
    UpgradeCancel {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
    },
    /// Usage of a pool's nodes as their agents report it, with the pool's total.
    Metrics {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
    },
    /// Renew a prepaid pool for more periods (unfreezes a frozen pool).
    Renew {
        #[arg(value_parser = parse::pool_id)]
        pool: u64,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        periods: u32,
    },
}

#[derive(Args, Debug)]
pub struct PoolCreateArgs {
    /// Pool name (lowercase letters, digits, hyphens; starts with a letter).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long, value_enum, default_value_t = PoolKindArg::Dedicated)]
    pub kind: PoolKindArg,
    /// Owning tenant of a dedicated pool (a tenant's own token may omit it).
    #[arg(long, value_parser = parse::tenant_id)]
    pub owner: Option<u64>,
    /// A flavor with its zone and node count; repeat for several.
    #[arg(long = "flavor", value_name = "NAME:ZONE:COUNT", value_parser = parse::pool_flavor)]
    pub flavors: Vec<corral_client::pb::PoolFlavor>,
    /// Job types the pool takes, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "training,inference,notebook"
    )]
    pub job_types: Vec<JobTypeArg>,
    /// Network to attach.
    #[arg(long, value_parser = parse::network_id)]
    pub network: Option<u64>,
    #[arg(long, value_enum, default_value_t = BillingArg::PayPerUse)]
    pub billing: BillingArg,
    /// Prepaid period in months.
    #[arg(long, value_name = "N")]
    pub period_months: Option<u32>,
    /// Renew a prepaid pool automatically when its period ends.
    #[arg(long)]
    pub auto_renew: bool,
    #[arg(long, value_name = "VERSION")]
    pub gpu_driver: Option<String>,
    #[arg(long, value_name = "VERSION")]
    pub npu_driver: Option<String>,
    /// A tag; repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub tags: Vec<(String, String)>,
}

// ---------- nodes ----------

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Register a node into the platform inventory (agents normally do this).
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        flavor: String,
        #[arg(long)]
        zone: String,
        /// A label; repeat for several.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        labels: Vec<(String, String)>,
        /// A taint; repeat for several.
        #[arg(long = "taint", value_name = "KEY[=VALUE][:EFFECT]", value_parser = parse::taint)]
        taints: Vec<corral_client::pb::Taint>,
        #[arg(long, value_name = "VERSION")]
        gpu_driver: Option<String>,
        #[arg(long, value_name = "VERSION")]
        npu_driver: Option<String>,
    },
    /// Show one node.
    Get {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// List nodes.
    List {
        /// Only nodes of this pool.
        #[arg(long, value_parser = parse::pool_id)]
        pool: Option<u64>,
        /// Only nodes with this status (Available, Abnormal, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only nodes in no pool.
        #[arg(long)]
        free_only: bool,
        #[command(flatten)]
        limit: LimitArg,
    },
    /// Stop scheduling onto a node and evict its work (at the deadline, if given).
    Drain {
        #[arg(value_parser = parse::node_id)]
        node: u64,
        /// Evict remaining work at this time (ms since the Unix epoch).
        #[arg(long, value_name = "MS", conflicts_with = "grace_ms")]
        deadline_ms: Option<u64>,
        /// Evict remaining work this many ms from now.
        #[arg(long, value_name = "MS")]
        grace_ms: Option<u64>,
    },
    /// Stop scheduling onto a node.
    Cordon {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// Allow scheduling onto a node again.
    Uncordon {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// Protect a node from deletion and scale-in.
    Lock {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// Remove a node's deletion lock.
    Unlock {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// Delete a node from the inventory.
    Delete {
        #[arg(value_parser = parse::node_id)]
        node: u64,
    },
    /// Replace a node's taints (none given: remove all).
    Taint {
        #[arg(value_parser = parse::node_id)]
        node: u64,
        /// EFFECT is NoSchedule (default), PreferNoSchedule or NoExecute.
        #[arg(value_name = "KEY[=VALUE][:EFFECT]", value_parser = parse::taint)]
        taints: Vec<corral_client::pb::Taint>,
    },
    /// Replace a node's labels (none given: remove all).
    Label {
        #[arg(value_parser = parse::node_id)]
        node: u64,
        #[arg(value_name = "KEY=VALUE", value_parser = parse::key_value)]
        labels: Vec<(String, String)>,
    },
    /// Make an idle node of a dedicated pool a hot standby (or, with --off, a regular
    /// node again). A standby takes no work until it replaces a lost node.
    Standby {
        #[arg(value_parser = parse::node_id)]
        node: u64,
        #[arg(long)]
        off: bool,
    },
    /// CPU, memory and accelerator use reported by the agents (all visible nodes, or
    /// one node or pool).
    Metrics {
        #[arg(value_parser = parse::node_id)]
        node: Option<u64>,
        #[arg(long, value_parser = parse::pool_id)]
        pool: Option<u64>,
    },
}

// ---------- jobs ----------

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKindArg {
    Training,
    Inference,
    Notebook,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job from flags or from a JSON file.
    Submit(Box<JobSubmitArgs>),
    /// Show one job.
    Get {
        #[arg(value_parser = parse::job_id)]
        job: u64,
        /// Show the values of the job's secret environment (its tenant's admin or
        /// operators only); otherwise they read `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// List jobs.
    List {
        #[arg(long, value_parser = parse::pool_id)]
        pool: Option<u64>,
        /// Only jobs in this state (Pending, Running, Completed, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this kind (training, inference, notebook, workflow).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, value_parser = parse::tenant_id)]
        tenant: Option<u64>,
        #[command(flatten)]
        limit: LimitArg,
    },
    /// Terminate a job (Creating, Pending or Running).
    Terminate {
        #[arg(value_parser = parse::job_id)]
        job: u64,
    },
    /// Stop an inference service or notebook.
    Stop {
        #[arg(value_parser = parse::job_id)]
        job: u64,
    },
    /// Start a stopped inference service or notebook.
    Start {
        #[arg(value_parser = parse::job_id)]
        job: u64,
    },
    /// Change a pending job's priority (1 low .. 3 high).
    Priority {
        #[arg(value_parser = parse::job_id)]
        job: u64,
        #[arg(value_parser = clap::value_parser!(u32).range(1..=3))]
        priority: u32,
    },
    /// Print a replica's output (stdout and stderr), streamed from its node's agent.
    Logs {
        #[arg(value_parser = parse::job_id)]
        job: u64,
        /// The replica's rank.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Keep printing until the replica exits.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last this many bytes.
        #[arg(long, value_name = "BYTES")]
        tail: Option<u64>,
    },
}

const JOB_FILE_HELP: &str = r#"The --file JSON is a JobSpec with the field names of proto/admin.proto; every
field is optional (missing = 0/empty, which the server reads as its default) and
unknown fields are an error. Ids are plain numbers. `-` reads stdin.

  {
    "name": "resnet", "pool": 3, "kind": "training",      // training|inference|notebook|workflow
    "replicas": 2, "accelerator_type": "nvidia-a100", "priority": 2,
    "per_replica": {"cpu_millicores": 8000, "memory_mib": 65536, "accelerators": 8,
                    "disk_gib": 0, "bandwidth_mbps": 0},
    "command": ["python", "train.py"], "environment": {"EPOCHS": "10"},
    "secret_environment": {"HF_TOKEN": "..."},             // shown as <redacted>
    "node_selector": {"rack": "r1"}, "tolerations": [{"key": "gpu", "value": ""}],
    "max_runtime_ms": 0, "retry_limit": 3,                 // retry_limit: training only
    "auto_stop_after_ms": 0,                               // notebooks only
    "steps": [                                             // workflows only
      {"name": "prep", "depends_on": [], "use_public_pool": true,
       "spec": {"kind": "training", "replicas": 1, "command": ["prep.sh"]}},
      {"name": "train", "depends_on": [0], "spec": {"kind": "training", "pool": 3}}
    ]
  }

(Comments are for this help only; JSON has none.) `corral job get JOB -o json`
prints a job whose "spec" has the same shape."#;

#[derive(Args, Debug, Default)]
#[command(after_help = JOB_FILE_HELP)]
pub struct JobSubmitArgs {
    /// Read the JobSpec from a JSON file (`-` for stdin) instead of the flags below
    /// (--name and --pool still override it); needed for workflows.
    #[arg(long, value_name = "FILE", conflicts_with = "spec_flags")]
    pub file: Option<PathBuf>,
    /// Submit this many copies in one batch.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub count: u32,
    /// Job name.
    #[arg(long, required_unless_present = "file")]
    pub name: Option<String>,
    /// Pool to run in.
    #[arg(long, value_parser = parse::pool_id, required_unless_present = "file")]
    pub pool: Option<u64>,
    /// The pool's queue to submit to [default: the pool's default queue, if it has
    /// queues].
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    #[command(flatten)]
    pub spec: JobSpecFlags,
}

/// The JobSpec fields settable by flags.
#[derive(Args, Debug, Default)]
#[group(id = "spec_flags", multiple = true)]
pub struct JobSpecFlags {
    #[arg(long, value_enum)]
    pub kind: Option<JobKindArg>,
    /// Replicas (a training gang is placed all at once) [default: 1].
    #[arg(long)]
    pub replicas: Option<u32>,
    /// CPU per replica in millicores [default: 1000].
    #[arg(long, value_name = "N")]
    pub cpu_millicores: Option<u64>,
    /// Memory per replica in MiB [default: 4096].
    #[arg(long, value_name = "N")]
    pub memory_mib: Option<u64>,
    /// Accelerators per replica.
    #[arg(long, value_name = "N")]
    pub accelerators: Option<u32>,
    /// Disk per replica in GiB.
    #[arg(long, value_name = "N")]
    pub disk_gib: Option<u64>,
    /// Network bandwidth per replica in Mbit/s.
    #[arg(long, value_name = "N")]
    pub bandwidth_mbps: Option<u64>,
    /// Accelerator type, e.g. nvidia-a100 (required with --accelerators).
    #[arg(long)]
    pub accelerator_type: Option<String>,
    /// Priority 1 (low, default) to 3 (high; needs permission).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub priority: Option<u32>,
    /// Restarts after a failure (training only) [default: 1].
    #[arg(long, value_name = "N")]
    pub retry_limit: Option<u32>,
    /// Fail the job after running this long.
    #[arg(long, value_name = "MS")]
    pub max_runtime_ms: Option<u64>,
    /// Stop the notebook after this long (notebooks only).
    #[arg(long, value_name = "MS")]
    pub auto_stop_ms: Option<u64>,
    /// An environment variable; repeat for several.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub env: Vec<(String, String)>,
    /// A secret environment variable: the replicas get it, listings, events and the
    /// audit trail show `<redacted>`. `KEY` alone takes the value from this command's own
    /// environment, which, unlike `KEY=VALUE`, `ps` does not show. Repeat for several.
    #[arg(long = "secret-env", value_name = "KEY[=VALUE]", value_parser = parse::secret_env)]
    pub secret_env: Vec<(String, String)>,
    /// Run only on nodes with this label; repeat for several.
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub selectors: Vec<(String, String)>,
    /// Tolerate taints with this key (and value, if given); repeat for several.
    #[arg(long = "toleration", value_name = "KEY[=VALUE]", value_parser = parse::toleration)]
    pub tolerations: Vec<corral_client::pb::Toleration>,
    /// The command each replica runs, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

// ---------- bills, events, cluster ----------

#[derive(Subcommand, Debug)]
pub enum BillCommand {
    /// List bill lines with the window and lifetime totals.
    List {
        #[arg(long, value_parser = parse::tenant_id)]
        tenant: Option<u64>,
        /// Window start (ms since the Unix epoch).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        from_ms: u64,
        /// Window end (ms since the Unix epoch) [default: no end].
        #[arg(long, value_name = "MS")]
        to_ms: Option<u64>,
    },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Without --follow, events are printed until none arrives for --idle-ms \
(the stream first replays what exists, quickly), then the command exits. With -o json, \
each event is one JSON object on its own line."
)]
pub struct EventsArgs {
    /// First log index to print.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from_index: u64,
    /// Keep printing new events until interrupted (reconnects across failovers).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Without --follow: stop once no event arrived for this long.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub idle_ms: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Times are RFC 3339 (2026-12-07T10:00:00Z) or a time ago (30s, 15m, 2h, \
7d). The platform admin and auditor see every record; a tenant's tokens see their tenant's. \
Records are kept for 30 days, at most 100,000. When a page is full, the last line says how \
to ask for the next one (--after)."
)]
pub struct AuditArgs {
    /// Only writes of this principal (as shown, e.g. tenant-3/operator, platform-admin,
    /// node-2) or of the token with this name.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only writes to this object, e.g. job-7, pool-2, tenant-3, token:ci.
    #[arg(long, value_name = "OBJECT")]
    pub object: Option<String>,
    /// Only this command, e.g. job_submit, token_revoke, node_cordon.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only records from this time on.
    #[arg(long, value_name = "TIME", value_parser = parse::time_ms)]
    pub since: Option<u64>,
    /// Only records before this time.
    #[arg(long, value_name = "TIME", value_parser = parse::time_ms)]
    pub until: Option<u64>,
    /// At most this many records [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub limit: Option<u32>,
    /// Only records after this sequence number (to page on).
    #[arg(long, value_name = "SEQUENCE")]
    pub after: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members as seen by the answering replica.
    Status {
        /// Also the replica's state digest (equal on replicas at equal applied
        /// indexes); encoding a large state takes a while and holds up its applies.
        #[arg(long)]
        digest: bool,
    },
    /// Add a replica (first as a learner, then as a voter).
    AddReplica {
        id: u64,
        /// Its address, host:port.
        address: String,
    },
    /// Remove a replica.
    RemoveReplica { id: u64 },
    /// Make the answering replica take a snapshot now.
    Snapshot,
    /// Clear cluster alarms (NOSPACE) once their cause is fixed; an alarm whose cause
    /// remains is raised again within a second. `cluster status` lists them.
    AlarmDisarm {
        /// Only this replica's alarms (default: all).
        #[arg(long)]
        replica: Option<u64>,
    },
}
