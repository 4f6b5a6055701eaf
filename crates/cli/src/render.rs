//! Tables for each kind of answer (the JSON form is the message itself).

use crate::output::{
    duration, fields, id, list, map, money, optional_duration, resources, text, time_ms, yes_no,
    Table,
};
use corral_client::pb;

pub fn ack(ack: &pb::Ack) -> String {
    format!("ok (log index {})\n", ack.index)
}

pub fn tenants(tenants: &[pb::Tenant]) -> String {
    let mut table = Table::new(&["ID", "NAME", "QUOTA", "USED", "HIGH-PRIORITY", "CREATED-MS"]);
    for tenant in tenants {
        table.row(vec![
            id("tenant", tenant.id),
            tenant.name.clone(),
            resources(tenant.quota.as_ref()),
            resources(tenant.used.as_ref()),
            yes_no(tenant.may_use_high_priority),
            time_ms(tenant.created_at_ms),
        ]);
    }
    table.render()
}

pub fn token(token: &pb::CreateTokenResponse) -> String {
    fields(&[
        ("token", token.name.clone()),
        ("secret", token.secret.clone()),
        (
            "expires-ms",
            if token.expires_at_ms == 0 {
                "never".to_string()
            } else {
                token.expires_at_ms.to_string()
            },
        ),
    ])
}

pub fn tokens(tokens: &[pb::TokenInfo]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "ROLE",
        "TENANT",
        "CREATED-MS",
        "EXPIRES-MS",
        "LAST-USED-MS",
        "GENERATION",
    ]);
    for token in tokens {
        let role = pb::TokenRole::try_from(token.role)
            .map_or("unknown", |role| role.as_str_name())
            .trim_start_matches("TOKEN_ROLE_")
            .to_ascii_lowercase()
            .replace('_', "-");
        table.row(vec![
            token.name.clone(),
            role,
            if token.tenant == 0 {
                "-".to_string()
            } else {
                format!("tenant-{}", token.tenant)
            },
            token.created_at_ms.to_string(),
            if token.expires_at_ms == 0 {
                "never".to_string()
            } else {
                token.expires_at_ms.to_string()
            },
            if token.last_used_ms == 0 {
                "-".to_string()
            } else {
                token.last_used_ms.to_string()
            },
            token.generation.to_string(),
        ]);
    }
    table.render()
}

pub fn flavors(flavors: &[pb::Flavor]) -> String {
    let mut table = Table::new(&["NAME", "CAPACITY", "ACCELERATOR", "ARCH", "PRICE/HOUR"]);
    for flavor in flavors {
        table.row(vec![
            flavor.name.clone(),
            resources(flavor.capacity.as_ref()),
            text(&flavor.accelerator_type),
            text(&flavor.cpu_architecture),
            money(flavor.price_micros_per_hour),
        ]);
    }
    table.render()
}

pub fn networks(networks: &[pb::Network]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "TENANT",
        "CIDR",
        "ADDRESSES-IN-USE",
        "STORAGE",
    ]);
    for network in networks {
        table.row(vec![
            id("net", network.id),
            network.name.clone(),
            id("tenant", network.tenant),
            network.cidr.clone(),
            network.addresses_in_use.to_string(),
            list(&network.storage_endpoints),
        ]);
    }
    table.render()
}

fn pool_flavors(flavors: &[pb::PoolFlavor]) -> String {
    let flavors: Vec<String> = flavors
        .iter()
        .map(|flavor| format!("{}:{}:{}", flavor.flavor, flavor.zone, flavor.node_count))
        .collect();
    list(&flavors)
}

pub fn pools(pools: &[pb::Pool]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "KIND",
        "OWNER",
        "STATUS",
        "NODES",
        "QUEUED",
        "FLAVORS",
        "JOB-TYPES",
    ]);
    for pool in pools {
        table.row(vec![
            id("pool", pool.id),
            pool.name.clone(),
            pool.kind.clone(),
            id("tenant", pool.owner),
            pool.status.clone(),
            pool.node_count.to_string(),
            pool.queued_jobs.to_string(),
            pool_flavors(&pool.flavors),
            list(&pool.job_types),
        ]);
    }
    table.render()
}

pub fn pool(pool: &pb::Pool) -> String {
    let billing = match &pool.billing {
        Some(billing) if billing.mode == "prepaid" => format!(
            "prepaid, {} month(s){}",
            billing.period_months,
            if billing.auto_renew {
                ", auto-renew"
            } else {
                ""
            }
        ),
        Some(billing) => text(&billing.mode),
        None => "-".to_string(),
    };
    let driver = pool.driver.clone().unwrap_or_default();
    fields(&[
        ("id", id("pool", pool.id)),
        ("name", pool.name.clone()),
        ("description", text(&pool.description)),
        ("kind", pool.kind.clone()),
        ("owner", id("tenant", pool.owner)),
        ("status", pool.status.clone()),
        ("flavors", pool_flavors(&pool.flavors)),
        ("job types", list(&pool.job_types)),
        ("network", id("net", pool.network)),
        ("gpu driver", text(&driver.gpu_driver_version)),
        ("npu driver", text(&driver.npu_driver_version)),
        ("pending upgrade", text(&pool.pending_upgrade)),
        ("billing", billing),
        ("paid until ms", time_ms(pool.paid_until_ms)),
        ("tags", map(&pool.tags)),
        ("nodes", pool.node_count.to_string()),
        ("queued jobs", pool.queued_jobs.to_string()),
        ("capacity", resources(pool.capacity.as_ref())),
        ("allocated", resources(pool.allocated.as_ref())),
        ("created ms", time_ms(pool.created_at_ms)),
    ])
}

fn taints(taints: &[pb::Taint]) -> String {
    let taints: Vec<String> = taints
        .iter()
        .map(|taint| match taint.value.as_str() {
            "" => format!("{}:{}", taint.key, taint.effect),
            value => format!("{}={}:{}", taint.key, value, taint.effect),
        })
        .collect();
    list(&taints)
}

pub fn nodes(nodes: &[pb::Node]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "POOL",
        "FLAVOR",
        "ZONE",
        "STATUS",
        "SCHEDULABLE",
        "REPLICAS",
        "ALLOCATED",
    ]);
    for node in nodes {
        table.row(vec![
            id("node", node.id),
            node.name.clone(),
            id("pool", node.pool),
            node.flavor.clone(),
            node.zone.clone(),
            node.status.clone(),
            yes_no(node.schedulable),
            node.replicas.to_string(),
            resources(node.allocated.as_ref()),
        ]);
    }
    table.render()
}

pub fn node(node: &pb::Node) -> String {
    fields(&[
        ("id", id("node", node.id)),
        ("name", node.name.clone()),
        ("pool", id("pool", node.pool)),
        ("flavor", node.flavor.clone()),
        ("zone", node.zone.clone()),
        ("status", node.status.clone()),
        ("schedulable", yes_no(node.schedulable)),
        ("deletion locked", yes_no(node.deletion_locked)),
        ("drain deadline ms", time_ms(node.drain_deadline_ms)),
        ("capacity", resources(node.capacity.as_ref())),
        ("allocated", resources(node.allocated.as_ref())),
        ("accelerator", text(&node.accelerator_type)),
        ("replicas", node.replicas.to_string()),
        ("ip address", text(&node.ip_address)),
        ("gpu driver", text(&node.gpu_driver_version)),
        ("npu driver", text(&node.npu_driver_version)),
        ("labels", map(&node.labels)),
        ("taints", taints(&node.taints)),
        ("standby", yes_no(node.standby)),
        ("upgrading", text(&node.upgrading)),
        ("isolation", isolation(&node.isolation)),
        ("upgrade failure", text(&node.upgrade_failure)),
    ])
}

/// A node's replica isolation, loud when there is none.
fn isolation(isolation: &str) -> String {
    match isolation {
        "" => "-".to_string(),
        "none" => {
            "NONE (replicas run as the agent's user, unlimited: development only)".to_string()
        }
        other => other.to_string(),
    }
}

/// What a figure nothing measured shows (never a misleading 0).
const UNMEASURED: &str = "unmeasured";

/// A node's accelerator utilisation, or "unmeasured" (no NVML, no simulation; also a
/// node that has not reported yet).
fn accelerator_utilization(node: &pb::NodeMetrics) -> String {
    if node.accelerators_measured {
        format!("{}%", node.accelerator_utilization_percent)
    } else {
        UNMEASURED.to_string()
    }
}

/// Per-node usage and, for more than one node, a total row.
pub fn node_metrics(nodes: &[pb::NodeMetrics]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "POOL",
        "STATUS",
        "HEARTBEAT",
        "CPU USED",
        "MEMORY USED",
        "ACCEL UTIL",
        "PROCESSES",
        "ALLOCATED",
    ]);
    let mut cpu_millicores = 0u64;
    let mut memory_mib = 0u64;
    let mut processes = 0u64;
    // The mean is over the nodes whose accelerators are measured.
    let mut utilization_sum = 0u64;
    let mut measured = 0u64;
    for node in nodes {
        cpu_millicores = cpu_millicores.saturating_add(node.cpu_used_millicores);
        memory_mib = memory_mib.saturating_add(node.memory_used_mib);
        processes = processes.saturating_add(u64::from(node.running_processes));
        if node.accelerators_measured {
            utilization_sum =
                utilization_sum.saturating_add(u64::from(node.accelerator_utilization_percent));
            measured += 1;
        }
        let heartbeat = if node.reporting {
            format!("{} ago", duration(node.heartbeat_age_ms))
        } else {
            "none yet".to_string()
        };
        table.row(vec![
            id("node", node.node),
            node.name.clone(),
            id("pool", node.pool),
            node.status.clone(),
            heartbeat,
            format!("{}m", node.cpu_used_millicores),
            format!("{} MiB", node.memory_used_mib),
            accelerator_utilization(node),
            node.running_processes.to_string(),
            resources(node.allocated.as_ref()),
        ]);
    }
    if nodes.len() > 1 {
        table.row(vec![
            "total".to_string(),
            format!("{} nodes", nodes.len()),
            String::new(),
            String::new(),
            String::new(),
            format!("{cpu_millicores}m"),
            format!("{memory_mib} MiB"),
            utilization_sum
                .checked_div(measured)
                .map_or_else(|| UNMEASURED.to_string(), |mean| format!("{mean}%")),
            processes.to_string(),
            String::new(),
        ]);
    }
    table.render()
}

fn queue_position(job: &pb::Job) -> String {
    if job.queue_position < 0 {
        "-".to_string()
    } else {
        job.queue_position.to_string()
    }
}

pub fn jobs(jobs: &[pb::Job]) -> String {
    let mut table = Table::new(&[
        "ID", "NAME", "KIND", "POOL", "TENANT", "STATE", "PRIO", "REPLICAS", "QUEUE", "PENDING",
        "RUNNING",
    ]);
    for job in jobs {
        let spec = job.spec.clone().unwrap_or_default();
        table.row(vec![
            id("job", job.id),
            spec.name,
            spec.kind,
            id("pool", spec.pool),
            id("tenant", job.tenant),
            job.state.clone(),
            spec.priority.to_string(),
            spec.replicas.to_string(),
            queue_position(job),
            duration(job.pending_ms),
            duration(job.running_ms),
        ]);
    }
    table.render()
}

pub fn job(job: &pb::Job) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let tolerations: Vec<String> = spec
        .tolerations
        .iter()
        .map(|toleration| match toleration.value.as_str() {
            "" => toleration.key.clone(),
            value => format!("{}={}", toleration.key, value),
        })
        .collect();
    let mut out = fields(&[
        ("id", id("job", job.id)),
        ("name", spec.name.clone()),
        ("kind", spec.kind.clone()),
        ("tenant", id("tenant", job.tenant)),
        ("pool", id("pool", spec.pool)),
        ("queue", text(&spec.queue)),
        ("state", job.state.clone()),
        ("reason", text(&job.reason)),
        ("priority", spec.priority.to_string()),
        ("replicas", spec.replicas.to_string()),
        ("per replica", resources(spec.per_replica.as_ref())),
        ("accelerator", text(&spec.accelerator_type)),
        ("command", text(&spec.command.join(" "))),
        ("environment", map(&spec.environment)),
        ("secret environment", map(&spec.secret_environment)),
        ("node selector", map(&spec.node_selector)),
        ("tolerations", list(&tolerations)),
        ("max runtime", optional_duration(spec.max_runtime_ms)),
        (
            "retries used",
            format!("{} of {}", job.retries_used, spec.retry_limit),
        ),
        ("disruptions", job.disruptions.to_string()),
        (
            "auto stop after",
            optional_duration(spec.auto_stop_after_ms),
        ),
        ("queue position", queue_position(job)),
        ("submitted ms", time_ms(job.submitted_at_ms)),
        ("finished ms", time_ms(job.finished_at_ms)),
        ("pending", duration(job.pending_ms)),
        ("running", duration(job.running_ms)),
        ("workflow", id("job", job.parent_workflow)),
        (
            "steps",
            list(
                &job.step_jobs
                    .iter()
                    .map(|step| id("job", *step))
                    .collect::<Vec<_>>(),
            ),
        ),
    ]);
    if !job.replicas.is_empty() {
        let mut table = Table::new(&["RANK", "NODE", "DEVICES", "STATE", "EXIT"]);
        for replica in &job.replicas {
            table.row(vec![
                replica.rank.to_string(),
                id("node", replica.node),
                list(&replica.devices),
                replica.state.clone(),
                replica.exit_code.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

pub fn submitted(response: &pb::SubmitJobResponse) -> String {
    let mut table = Table::new(&["JOB", "LOG-INDEX"]);
    table.row(vec![id("job", response.job), response.index.to_string()]);
    table.render()
}

pub fn submitted_batch(response: &pb::SubmitJobsResponse) -> String {
    let mut table = Table::new(&["#", "JOB", "ERROR"]);
    for (number, result) in response.results.iter().enumerate() {
        table.row(vec![
            number.to_string(),
            id("job", result.job),
            text(&result.error),
        ]);
    }
    table.render()
}

pub fn bills(bills: &pb::ListBillsResponse) -> String {
    let mut table = Table::new(&[
        "TENANT", "POOL", "SUBJECT", "FROM-MS", "TO-MS", "DURATION", "AMOUNT",
    ]);
    for line in &bills.lines {
        table.row(vec![
            id("tenant", line.tenant),
            id("pool", line.pool),
            line.subject.clone(),
            line.from_ms.to_string(),
            line.to_ms.to_string(),
            duration(line.to_ms.saturating_sub(line.from_ms)),
            money(line.amount_micros),
        ]);
    }
    let mut out = table.render();
    out.push('\n');
    out.push_str(&fields(&[
        ("window total", money(bills.window_total_micros)),
        ("lifetime total", money(bills.lifetime_total_micros)),
    ]));
    if bills.truncated {
        out.push_str("(more lines exist than were returned; narrow the window)\n");
    }
    out
}

pub fn audit(audit: &pb::ListAuditResponse) -> String {
    let mut table = Table::new(&[
        "SEQ",
        "TIME",
        "INDEX",
        "PRINCIPAL",
        "TOKEN",
        "KIND",
        "TARGET",
        "OUTCOME",
    ]);
    for record in &audit.records {
        let outcome = if record.reason.is_empty() {
            record.outcome.clone()
        } else {
            format!(
                "{}: {}",
                record.outcome,
                record.reason.replace(['\n', '\r'], " ")
            )
        };
        table.row(vec![
            record.sequence.to_string(),
            crate::times::format_rfc3339(record.at_ms),
            record.index.to_string(),
            record.principal.clone(),
            text(&record.token),
            record.kind.clone(),
            record.target.clone(),
            outcome,
        ]);
    }
    let mut out = table.render();
    if audit.next_after != 0 {
        out.push_str(&format!(
            "(more records may match: add --after {})\n",
            audit.next_after
        ));
    }
    out
}

/// Column widths for the event stream, whose rows are printed as they arrive.
pub const EVENT_HEADER: &str =
    "INDEX     AT-MS          TENANT      PRINCIPAL           KIND                    DETAIL\n";

pub fn event(event: &pb::Event) -> String {
    format!(
        "{:<9} {:<14} {:<11} {:<19} {:<23} {}\n",
        event.index,
        event.at_ms,
        id("tenant", event.tenant),
        text(&event.principal),
        event.kind,
        event.detail.replace(['\n', '\r'], " ")
    )
}

pub fn cluster_status(status: &pb::ClusterStatusResponse) -> String {
    let mut lines = vec![
        ("this replica", status.this_replica.to_string()),
        (
            "leader",
            match status.leader {
                0 => "none".to_string(),
                leader => format!("{leader} ({})", text(&status.leader_address)),
            },
        ),
        ("term", status.term.to_string()),
        ("committed", status.committed.to_string()),
        ("last applied", status.last_applied.to_string()),
        ("snapshot index", status.snapshot_index.to_string()),
    ];
    // Present only when asked for (`--digest`).
    if !status.digest.is_empty() {
        lines.push(("state digest", status.digest.clone()));
    }
    lines.push((
        "health",
        if status.healthy {
            "serving"
        } else {
            "NOT SERVING"
        }
        .to_string(),
    ));
    if status.clock_offset_ms != 0 {
        lines.push(("clock offset", format!("{:+} ms", status.clock_offset_ms)));
    }
    for problem in &status.problems {
        lines.push(("problem", text(problem)));
    }
    for alarm in &status.alarms {
        lines.push((
            "ALARM",
            format!(
                "{} on replica {} since {}: {}",
                alarm.kind,
                alarm.replica,
                crate::times::format_rfc3339(alarm.raised_at_ms),
                text(&alarm.detail)
            ),
        ));
    }
    let mut out = fields(&lines);
    let mut table = Table::new(&["ID", "ADDRESS", "ROLE"]);
    for member in &status.members {
        let role = if member.id == status.leader {
            "leader"
        } else if member.voter {
            "voter"
        } else {
            "learner"
        };
        table.row(vec![
            member.id.to_string(),
            member.address.clone(),
            role.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

/// A queue limit: dimensions without a bound (the largest value) are left out; `none`
/// when no dimension has one.
fn queue_limit(limit: Option<&pb::Resources>) -> String {
    let Some(limit) = limit else {
        return "none".to_string();
    };
    let mut parts = Vec::new();
    if limit.cpu_millicores != u64::MAX {
        parts.push(format!("cpu={}m", limit.cpu_millicores));
    }
    if limit.memory_mib != u64::MAX {
        parts.push(format!("mem={}Mi", limit.memory_mib));
    }
    if limit.accelerators != u32::MAX {
        parts.push(format!("acc={}", limit.accelerators));
    }
    if limit.disk_gib != u64::MAX {
        parts.push(format!("disk={}Gi", limit.disk_gib));
    }
    if limit.bandwidth_mbps != u64::MAX {
        parts.push(format!("bw={}Mbps", limit.bandwidth_mbps));
    }
    if parts.is_empty() {
        return "none".to_string();
    }
    parts.join(" ")
}

/// `corral queue list`: each queue's settings.
pub fn queues(queues: &[pb::Queue]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "POOL",
        "DEFAULT",
        "WEIGHT",
        "GUARANTEE",
        "LIMIT",
        "MEMBERS",
    ]);
    for queue in queues {
        let spec = queue.spec.clone().unwrap_or_default();
        let members: Vec<String> = spec
            .members
            .iter()
            .map(|member| id("tenant", *member))
            .collect();
        table.row(vec![
            spec.name.clone(),
            id("pool", spec.pool),
            yes_no(spec.is_default),
            spec.weight.to_string(),
            resources(spec.guarantee.as_ref()),
            queue_limit(spec.limit.as_ref()),
            list(&members),
        ]);
    }
    table.render()
}

/// `corral queue status`: each queue's standing now.
pub fn queue_status(queues: &[pb::Queue]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "GUARANTEE",
        "LIMIT",
        "USED",
        "BORROWED",
        "LENT",
        "PENDING",
    ]);
    for queue in queues {
        let spec = queue.spec.clone().unwrap_or_default();
        table.row(vec![
            spec.name.clone(),
            resources(spec.guarantee.as_ref()),
            queue_limit(spec.limit.as_ref()),
            resources(queue.used.as_ref()),
            resources(queue.borrowed.as_ref()),
            resources(queue.lent.as_ref()),
            queue.pending_jobs.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lists_show_prefixed_ids_and_durations() {
        let job = pb::Job {
            id: 42,
            tenant: 2,
            spec: Some(pb::JobSpec {
                name: "resnet".into(),
                pool: 3,
                kind: "training".into(),
                replicas: 2,
                priority: 1,
                ..Default::default()
            }),
            state: "Pending".into(),
            queue_position: 0,
            pending_ms: 65_000,
            ..Default::default()
        };
        assert_eq!(
            jobs(&[job]),
            "ID      NAME    KIND      POOL    TENANT    STATE    PRIO  REPLICAS  QUEUE  PENDING  RUNNING\n\
             job-42  resnet  training  pool-3  tenant-2  Pending  1     2         0      1m 5s    0ms\n"
        );
    }

    #[test]
    fn cluster_status_marks_the_leader() {
        let status = pb::ClusterStatusResponse {
            leader: 2,
            leader_address: "b:2".into(),
            members: vec![
                pb::Member {
                    id: 1,
                    address: "a:1".into(),
                    voter: true,
                },
                pb::Member {
                    id: 2,
                    address: "b:2".into(),
                    voter: true,
                },
                pb::Member {
                    id: 3,
                    address: "c:3".into(),
                    voter: false,
                },
            ],
            ..Default::default()
        };
        let out = cluster_status(&status);
        assert!(out.contains("leader:          2 (b:2)\n"), "{out}");
        assert!(
            !out.contains("state digest"),
            "no digest was asked for: {out}"
        );
        assert!(out.contains("health:          NOT SERVING\n"), "{out}");
        let alarmed = cluster_status(&pb::ClusterStatusResponse {
            healthy: true,
            problems: vec!["replica 3's wall clock is +3600000 ms from the cluster's time".into()],
            alarms: vec![pb::Alarm {
                replica: 3,
                kind: "NOSPACE".into(),
                raised_at_ms: 0,
                detail: "10 MiB free".into(),
            }],
            ..status.clone()
        });
        assert!(alarmed.contains("health:          serving\n"), "{alarmed}");
        assert!(
            alarmed.contains("problem:         replica 3's wall clock"),
            "{alarmed}"
        );
        assert!(
            alarmed.contains("ALARM:           NOSPACE on replica 3 since 1970-01-01T00:00:00"),
            "{alarmed}"
        );
        let with_digest = cluster_status(&pb::ClusterStatusResponse {
            digest: "ab12".into(),
            ..status.clone()
        });
        assert!(
            with_digest.contains("state digest:    ab12\n"),
            "{with_digest}"
        );
        assert!(out.ends_with("ID  ADDRESS  ROLE\n1   a:1      voter\n2   b:2      leader\n3   c:3      learner\n"), "{out}");
    }

    #[test]
    fn events_are_one_line_each() {
        let line = event(&pb::Event {
            index: 7,
            at_ms: 1000,
            tenant: 0,
            kind: "PoolScaled".into(),
            detail: "a\nb".into(),
            principal: "platform-admin".into(),
        });
        assert_eq!(
            line,
            "7         1000           -           platform-admin      PoolScaled              a b\n"
        );
        assert_eq!(EVENT_HEADER.find("AT-MS"), line.find("1000"));
        assert_eq!(EVENT_HEADER.find("KIND"), line.find("PoolScaled"));
    }

    #[test]
    fn bills_show_totals_and_truncation() {
        let out = bills(&pb::ListBillsResponse {
            lines: vec![pb::BillLine {
                tenant: 1,
                pool: 2,
                subject: "job-3".into(),
                from_ms: 0,
                to_ms: 3_600_000,
                amount_micros: 2_500_000,
            }],
            window_total_micros: 2_500_000,
            lifetime_total_micros: 9_000_000,
            truncated: true,
        });
        assert!(
            out.contains("tenant-1  pool-2  job-3    0        3600000  1h 0m     2.500000"),
            "{out}"
        );
        assert!(out.contains("lifetime total:  9.000000"), "{out}");
        assert!(out.ends_with("narrow the window)\n"));
    }
}
