//! Running a parsed command: connect, call, print.

use crate::cli::{
    AuditArgs, BillCommand, CertCommand, ClusterCommand, Command, EventsArgs, FlavorCommand,
    GlobalArgs, JobCommand, JobSubmitArgs, NetworkCommand, NodeCommand, OutputFormat, PoolCommand,
    QueueCommand, TenantCommand, TokenCommand,
};
use crate::exit::CliError;
use crate::output::{emit, print};
use crate::{render, requests, server_commands};
use clap::CommandFactory;
use corral_client::{pb, ClientOptions, ClientTls, CorralClient, Transport};
use futures::StreamExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every client command needs.
struct Context {
    client: CorralClient,
    format: OutputFormat,
    stale: bool,
}

impl Context {
    fn read(&self) -> Option<pb::ReadOptions> {
        pb::ReadOptions::stale(self.stale)
    }

    fn ack(&self, ack: pb::Ack) -> Result<(), CliError> {
        emit(self.format, &ack, render::ack)
    }
}

pub async fn run(command: Command, global: GlobalArgs) -> Result<(), CliError> {
    match command {
        Command::Server(args) => server_commands::run_server(&args.config).await,
        Command::Dev(args) => {
            server_commands::run_dev(server_commands::DevRequest {
                port: args.port,
                data_dir: args.data_dir,
                replicas: args.replicas,
            })
            .await
        }
        Command::Cert(command) => cert(command),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::Cli::command(), "corral", &mut text);
            print(&String::from_utf8_lossy(&text))
        }
        command => {
            let context = Context {
                client: connect(&global)?,
                format: global.output,
                stale: global.stale,
            };
            client_command(&context, command).await
        }
    }
}

fn cert(command: CertCommand) -> Result<(), CliError> {
    let written = match command {
        CertCommand::Init { dir } => crate::cert::init(&dir),
        CertCommand::Issue {
            ca_dir,
            name,
            hosts,
            out,
        } => crate::cert::issue(&ca_dir, &name, &hosts, &out),
    }
    .map_err(CliError::failed)?;
    print(&format!(
        "wrote {}\nwrote {} (private: mode 0600)\n",
        written.certificate.display(),
        written.key.display()
    ))
}

/// TLS with the CA (and a client certificate) when given; otherwise plaintext, but only
/// to addresses written `http://`: plaintext is never what a bare address means.
fn transport(global: &GlobalArgs) -> Result<Transport, CliError> {
    let Some(ca_file) = &global.ca_file else {
        if let Some(bare) = global.addresses.iter().find(|address| {
            let address = address.trim();
            !address.is_empty()
                && !address.starts_with("http://")
                && !address.starts_with("https://")
        }) {
            return Err(CliError::usage(format!(
                "'{}' speaks TLS and needs the cluster CA: give --ca-file (or CORRAL_CA_FILE); \
                 to speak plaintext to a manager started with tls.insecure, write \
                 http://{}",
                bare.trim(),
                bare.trim()
            )));
        }
        return Ok(Transport::Plaintext);
    };
    let identity = match (&global.cert_file, &global.key_file) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    ClientTls::load(
        ca_file,
        identity,
        ["--ca-file", "--cert-file", "--key-file"],
    )
    .map(Transport::Tls)
    .map_err(|error| CliError::usage(error.to_string()))
}

fn connect(global: &GlobalArgs) -> Result<CorralClient, CliError> {
    let mut options = ClientOptions {
        transport: transport(global)?,
        ..ClientOptions::default()
    };
    if let Some(timeout_ms) = global.timeout_ms {
        options.timeout = Duration::from_millis(timeout_ms);
    }
    let token = match &global.token_file {
        Some(path) => Some(read_token_file(path)?),
        None => global.token.clone(),
    };
    CorralClient::connect(global.addresses.clone(), token, options)
        .map_err(|error| CliError::usage(error.message().to_string()))
}

/// A token file's first line; a file larger than any token is refused.
fn read_token_file(path: &std::path::Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::usage(format!("--token-file {}: {error}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() || token.len() > 4_096 {
        return Err(CliError::usage(format!(
            "--token-file {}: expected one token on its first line",
            path.display()
        )));
    }
    Ok(token.to_string())
}

async fn client_command(context: &Context, command: Command) -> Result<(), CliError> {
    match command {
        Command::Tenant(command) => tenant(context, command).await,
        Command::Token(command) => token(context, command).await,
        Command::Flavor(command) => flavor(context, command).await,
        Command::Network(command) => network(context, command).await,
        Command::Pool(command) => pool(context, command).await,
        Command::Queue(command) => queue(context, command).await,
        Command::Node(command) => node(context, command).await,
        Command::Job(command) => job(context, command).await,
        Command::Bill(BillCommand::List {
            tenant,
            from_ms,
            to_ms,
        }) => {
            let request = pb::ListBillsRequest {
                read: context.read(),
                tenant: tenant.unwrap_or(0),
                from_ms,
                to_ms: to_ms.unwrap_or(0),
            };
            let bills = context.client.list_bills(request).await?;
            emit(context.format, &bills, render::bills)
        }
        Command::Events(args) => events(context, args).await,
        Command::Audit(args) => audit(context, args).await,
        Command::Cluster(command) => cluster(context, command).await,
        Command::Server(_)
        | Command::Dev(_)
        | Command::Agent(_)
        | Command::AgentShim(_)
        | Command::Cert(_)
        | Command::Completions { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

async fn tenant(context: &Context, command: TenantCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        TenantCommand::Create {
            name,
            quota,
            high_priority,
        } => {
            let request = pb::CreateTenantRequest {
                name,
                quota: Some(requests::resources(&quota)),
                may_use_high_priority: high_priority,
                max_active_jobs: 0,
            };
            let tenant = client.create_tenant(request).await?;
            emit(context.format, &tenant, |tenant| {
                render::tenants(std::slice::from_ref(tenant))
            })
        }
        TenantCommand::List => {
            let response = client
                .list_tenants(pb::ListTenantsRequest {
                    read: context.read(),
                })
                .await?;
            emit(context.format, &response, |response| {
                render::tenants(&response.tenants)
            })
        }
        TenantCommand::SetQuota { tenant, quota } => {
            let request = pb::SetTenantQuotaRequest {
                tenant,
                quota: Some(requests::resources(&quota)),
            };
            context.ack(client.set_tenant_quota(request).await?)
        }
        TenantCommand::Delete { tenant } => context.ack(client.delete_tenant(tenant).await?),
        TenantCommand::Token(command) => token(context, command).await,
    }
}

async fn token(context: &Context, command: TokenCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        TokenCommand::Create {
            name,
            tenant,
            role,
            ttl,
            uses,
        } => {
            let request = pb::CreateTokenRequest {
                name,
                tenant: tenant.unwrap_or(0),
                role: role.map_or(pb::TokenRole::Unspecified, requests::token_role) as i32,
                ttl_seconds: ttl.unwrap_or(0),
                uses: uses.unwrap_or(0),
            };
            let token = client.create_token(request).await?;
            emit(context.format, &token, render::token)?;
            eprintln!("note: the secret is shown only this once; store it now");
            Ok(())
        }
        TokenCommand::Rotate { name, grace } => {
            let request = pb::RotateTokenRequest {
                name,
                grace_seconds: grace,
            };
            let token = client.rotate_token(request).await?;
            emit(context.format, &token, render::token)?;
            eprintln!("note: the new secret is shown only this once; store it now");
            Ok(())
        }
        TokenCommand::Revoke { name } => {
            context.ack(client.revoke_token(pb::RevokeTokenRequest { name }).await?)
        }
        TokenCommand::List => {
            let request = pb::ListTokensRequest {
                read: context.read(),
            };
            let response = client.list_tokens(request).await?;
            emit(context.format, &response, |response| {
                render::tokens(&response.tokens)
            })
        }
    }
}

async fn flavor(context: &Context, command: FlavorCommand) -> Result<(), CliError> {
    match command {
        FlavorCommand::Define {
            name,
            capacity,
            accelerator_type,
            cpu_architecture,
            price_micros_per_hour,
        } => {
            let flavor = pb::Flavor {
                name,
                capacity: Some(requests::resources(&capacity)),
                accelerator_type: accelerator_type.unwrap_or_default(),
                cpu_architecture,
                price_micros_per_hour,
            };
            context.ack(context.client.define_flavor(flavor).await?)
        }
        FlavorCommand::List => {
            let request = pb::ListTenantsRequest {
                read: context.read(),
            };
            let response = context.client.list_flavors(request).await?;
            emit(context.format, &response, |response| {
                render::flavors(&response.flavors)
            })
        }
    }
}

async fn network(context: &Context, command: NetworkCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        NetworkCommand::Create { name, cidr, tenant } => {
            let request = pb::CreateNetworkRequest {
                tenant: tenant.unwrap_or(0),
                name,
                cidr,
            };
            let network = client.create_network(request).await?;
            emit(context.format, &network, |network| {
                render::networks(std::slice::from_ref(network))
            })
        }
        NetworkCommand::List => {
            let response = client
                .list_networks(pb::ListNetworksRequest {
                    read: context.read(),
                })
                .await?;
            emit(context.format, &response, |response| {
                render::networks(&response.networks)
            })
        }
        NetworkCommand::Delete { network } => context.ack(client.delete_network(network).await?),
        NetworkCommand::Storage { network, endpoints } => context.ack(
            client
                .set_network_storage(pb::SetNetworkStorageRequest { network, endpoints })
                .await?,
        ),
    }
}

async fn queue(context: &Context, command: QueueCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        QueueCommand::Create(args) => {
            context.ack(client.create_queue(requests::queue_spec(&args)).await?)
        }
        QueueCommand::Update(args) => {
            context.ack(client.update_queue(requests::queue_spec(&args)).await?)
        }
        QueueCommand::Delete { pool, name } => context.ack(
            client
                .delete_queue(pb::DeleteQueueRequest { pool, name })
                .await?,
        ),
        QueueCommand::List { pool } | QueueCommand::Status { pool } => {
            let status = matches!(command, QueueCommand::Status { .. });
            let response = client
                .list_queues(pb::ListQueuesRequest {
                    pool,
                    read: context.read(),
                })
                .await?;
            emit(context.format, &response, |response| {
                if status {
                    render::queue_status(&response.queues)
                } else {
                    render::queues(&response.queues)
                }
            })
        }
    }
}

fn page(limit: Option<u32>) -> Option<pb::Page> {
    limit.map(|limit| pb::Page { limit })
}

async fn pool(context: &Context, command: PoolCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        PoolCommand::Create(args) => {
            let pool = client.create_pool(requests::create_pool(&args)?).await?;
            emit(context.format, &pool, render::pool)
        }
        PoolCommand::Get { pool } => {
            let pool = client
                .get_pool(pb::GetPoolRequest {
                    pool,
                    read: context.read(),
                })
                .await?;
            emit(context.format, &pool, render::pool)
        }
        PoolCommand::List {
            owner,
            status,
            limit,
        } => {
            let request = pb::ListPoolsRequest {
                read: context.read(),
                owner: owner.unwrap_or(0),
                status: status.unwrap_or_default(),
                page: page(limit.limit),
            };
            let response = client.list_pools(request).await?;
            emit(context.format, &response, |response| {
                render::pools(&response.pools)
            })
        }
        PoolCommand::Scale { pool, flavor } => {
            let request = pb::ScalePoolRequest {
                pool,
                flavor: flavor.flavor,
                zone: flavor.zone,
                node_count: flavor.node_count,
            };
            context.ack(client.scale_pool(request).await?)
        }
        PoolCommand::Delete { pool, force } => context.ack(
            client
                .delete_pool(pb::DeletePoolRequest { pool, force })
                .await?,
        ),
        PoolCommand::JobTypes { pool, job_types } => {
            let request = pb::SetPoolJobTypesRequest {
                pool,
                job_types: requests::job_types(&job_types),
            };
            context.ack(client.set_pool_job_types(request).await?)
        }
        PoolCommand::UpgradeDriver {
            pool,
            gpu_driver,
            npu_driver,
            mode,
            batch_size,
            batch_percent,
        } => {
            if gpu_driver.is_none() && npu_driver.is_none() {
                return Err(CliError::usage("give --gpu-driver, --npu-driver or both"));
            }
            let request = pb::RequestDriverUpgradeRequest {
                pool,
                target: Some(requests::driver(&gpu_driver, &npu_driver)),
                mode: requests::upgrade_mode(mode).into(),
                batch_size: match batch_percent {
                    Some(_) => 0,
                    None => batch_size.unwrap_or(1),
                },
                batch_percent: batch_percent.unwrap_or(0),
            };
            context.ack(client.request_driver_upgrade(request).await?)
        }
        PoolCommand::UpgradeCancel { pool } => {
            let request = pb::CancelDriverUpgradeRequest { pool };
            context.ack(client.cancel_driver_upgrade(request).await?)
        }
        PoolCommand::Metrics { pool } => {
            let request = pb::NodeMetricsRequest { pool, node: 0 };
            let response = client.node_metrics(request).await?;
            emit(context.format, &response, |response| {
                render::node_metrics(&response.nodes)
            })
        }
        PoolCommand::Renew { pool, periods } => context.ack(
            client
                .renew_pool(pb::RenewPoolRequest { pool, periods })
                .await?,
        ),
    }
}

async fn node(context: &Context, command: NodeCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        NodeCommand::Register {
            name,
            flavor,
            zone,
            labels,
            taints,
            gpu_driver,
            npu_driver,
        } => {
            let request = pb::RegisterNodeRequest {
                name,
                flavor,
                zone,
                labels: requests::string_map("--label", &labels)?,
                taints,
                gpu_driver_version: gpu_driver.unwrap_or_default(),
                npu_driver_version: npu_driver.unwrap_or_default(),
            };
            let node = client.register_node(request).await?;
            emit(context.format, &node, render::node)
        }
        NodeCommand::Get { node } => {
            let node = client
                .get_node(pb::GetNodeRequest {
                    node,
                    read: context.read(),
                })
                .await?;
            emit(context.format, &node, render::node)
        }
        NodeCommand::List {
            pool,
            status,
            free_only,
            limit,
        } => {
            let request = pb::ListNodesRequest {
                read: context.read(),
                pool: pool.unwrap_or(0),
                status: status.unwrap_or_default(),
                free_only,
                page: page(limit.limit),
            };
            let response = client.list_nodes(request).await?;
            emit(context.format, &response, |response| {
                render::nodes(&response.nodes)
            })
        }
        NodeCommand::Drain {
            node,
            deadline_ms,
            grace_ms,
        } => {
            let deadline_ms = requests::drain_deadline(deadline_ms, grace_ms, now_ms());
            context.ack(
                client
                    .drain_node(pb::DrainNodeRequest { node, deadline_ms })
                    .await?,
            )
        }
        NodeCommand::Cordon { node } => context.ack(client.cordon_node(node).await?),
        NodeCommand::Uncordon { node } => context.ack(client.uncordon_node(node).await?),
        NodeCommand::Lock { node } => context.ack(client.lock_node(node).await?),
        NodeCommand::Unlock { node } => context.ack(client.unlock_node(node).await?),
        NodeCommand::Delete { node } => context.ack(client.delete_node(node).await?),
        NodeCommand::Taint { node, taints } => context.ack(
            client
                .set_node_taints(pb::SetNodeTaintsRequest { node, taints })
                .await?,
        ),
        NodeCommand::Label { node, labels } => {
            let request = pb::SetNodeLabelsRequest {
                node,
                labels: requests::string_map("label", &labels)?,
            };
            context.ack(client.set_node_labels(request).await?)
        }
        NodeCommand::Standby { node, off } => context.ack(
            client
                .set_node_standby(pb::SetNodeStandbyRequest {
                    node,
                    standby: !off,
                })
                .await?,
        ),
        NodeCommand::Metrics { node, pool } => {
            let request = pb::NodeMetricsRequest {
                pool: pool.unwrap_or(0),
                node: node.unwrap_or(0),
            };
            let response = client.node_metrics(request).await?;
            emit(context.format, &response, |response| {
                render::node_metrics(&response.nodes)
            })
        }
    }
}

async fn job(context: &Context, command: JobCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        JobCommand::Submit(args) => submit(context, &args).await,
        JobCommand::Get { job, show_secrets } => {
            let job = client
                .get_job(pb::GetJobRequest {
                    job,
                    read: context.read(),
                    reveal_secrets: show_secrets,
                })
                .await?;
            emit(context.format, &job, render::job)
        }
        JobCommand::List {
            pool,
            state,
            kind,
            tenant,
            limit,
        } => {
            let request = pb::ListJobsRequest {
                read: context.read(),
                pool: pool.unwrap_or(0),
                state: state.unwrap_or_default(),
                kind: kind.unwrap_or_default(),
                tenant: tenant.unwrap_or(0),
                page: page(limit.limit),
            };
            let response = client.list_jobs(request).await?;
            emit(context.format, &response, |response| {
                render::jobs(&response.jobs)
            })
        }
        JobCommand::Terminate { job } => context.ack(client.terminate_job(job).await?),
        JobCommand::Stop { job } => context.ack(client.stop_job(job).await?),
        JobCommand::Start { job } => context.ack(client.start_job(job).await?),
        JobCommand::Priority { job, priority } => context.ack(
            client
                .change_priority(pb::ChangePriorityRequest { job, priority })
                .await?,
        ),
        JobCommand::Logs {
            job,
            replica,
            follow,
            tail,
        } => logs(context, job, replica, follow, tail).await,
    }
}

/// Copy a replica's output to stdout as it arrives (raw bytes, in any output format).
async fn logs(
    context: &Context,
    job: u64,
    rank: u32,
    follow: bool,
    tail: Option<u64>,
) -> Result<(), CliError> {
    use std::io::Write;
    let request = pb::JobLogsRequest {
        job,
        rank,
        follow,
        tail_bytes: tail.unwrap_or(0),
    };
    let mut stream = context.client.job_logs(request).await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|status| CliError::Call(status.into()))?
    {
        stdout
            .write_all(&chunk.data)
            .and_then(|()| stdout.flush())
            .map_err(|error| CliError::failed(format!("writing the output: {error}")))?;
    }
    Ok(())
}

async fn submit(context: &Context, args: &JobSubmitArgs) -> Result<(), CliError> {
    let spec = requests::job_spec(args)?;
    if args.count == 1 {
        let response = context.client.submit_job(spec).await?;
        return emit(context.format, &response, render::submitted);
    }
    let response = context
        .client
        .submit_jobs(requests::copies(spec, args.count))
        .await?;
    emit(context.format, &response, render::submitted_batch)?;
    let failed = response
        .results
        .iter()
        .filter(|result| !result.error.is_empty())
        .count();
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} of {} jobs were not submitted",
            args.count
        )));
    }
    Ok(())
}

/// Prints events; without --follow, stops once none arrived for `idle_ms` after the
/// stream opened.
async fn events(context: &Context, args: EventsArgs) -> Result<(), CliError> {
    let mut stream = context.client.watch_connected(args.from_index).await?;
    if context.format == OutputFormat::Table {
        print(render::EVENT_HEADER)?;
    }
    let idle = Duration::from_millis(args.idle_ms);
    loop {
        let next = if args.follow {
            stream.next().await
        } else {
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            }
        };
        let event = match next {
            None => return Ok(()),
            Some(event) => event?,
        };
        let line = match context.format {
            OutputFormat::Table => render::event(&event),
            OutputFormat::Json => {
                let mut line = serde_json::to_string(&event)
                    .map_err(|error| CliError::failed(format!("cannot print JSON: {error}")))?;
                line.push('\n');
                line
            }
        };
        print(&line)?;
    }
}

async fn audit(context: &Context, args: AuditArgs) -> Result<(), CliError> {
    let request = pb::ListAuditRequest {
        read: context.read(),
        principal: args.principal.unwrap_or_default(),
        object: args.object.unwrap_or_default(),
        kind: args.kind.unwrap_or_default(),
        since_ms: args.since.unwrap_or(0),
        until_ms: args.until.unwrap_or(0),
        page: args.limit.map(|limit| pb::Page { limit }),
        after_sequence: args.after.unwrap_or(0),
    };
    let response = context.client.list_audit(request).await?;
    emit(context.format, &response, render::audit)
}

async fn cluster(context: &Context, command: ClusterCommand) -> Result<(), CliError> {
    let client = &context.client;
    match command {
        ClusterCommand::Status { digest } => {
            let status = client.cluster_status(digest).await?;
            emit(context.format, &status, render::cluster_status)
        }
        ClusterCommand::AddReplica { id, address } => context.ack(
            client
                .add_replica(pb::AddReplicaRequest { id, address })
                .await?,
        ),
        ClusterCommand::RemoveReplica { id } => context.ack(client.remove_replica(id).await?),
        ClusterCommand::Snapshot => context.ack(client.trigger_snapshot().await?),
        ClusterCommand::AlarmDisarm { replica } => context.ack(
            client
                .disarm_alarm(pb::DisarmAlarmRequest {
                    replica: replica.unwrap_or(0),
                })
                .await?,
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
