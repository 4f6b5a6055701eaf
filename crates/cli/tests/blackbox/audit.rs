//! The audit trail through the `corral` binary against a real replicated cluster: a
//! tenant's applied and refused writes appear with its principal and token name; another
//! tenant cannot see them; the platform admin sees everything; `-o json` parses.

use crate::cluster::define_world;
use crate::common;
use common::{Admin, Cluster, ADMIN_TOKEN};
use std::process::Output;
use std::time::Duration;

fn corral(address: &str, token: &str, args: &[&str]) -> Output {
    common::corral_command(address, token)
        .args(args)
        .output()
        .expect("run corral")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("the output is JSON")
}

fn records(value: &serde_json::Value) -> Vec<serde_json::Value> {
    value["records"].as_array().cloned().unwrap_or_default()
}

fn text(record: &serde_json::Value, field: &str) -> String {
    record[field].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_shows_each_tenant_its_own_writes_and_the_admin_all() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(3, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();
    let admin = Admin::connect(&address, ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    let (alpha, beta) = (world.tenant_ids[0], world.tenant_ids[1]);
    let (alpha_token, beta_token) = (&world.tenant_tokens[0], &world.tenant_tokens[1]);
    let pool = world.public_pool.to_string();

    // Alpha's applied write, and its refused one, through a follower.
    let follower = cluster.replicas[1].address.clone();
    let submitted = corral(
        &follower,
        alpha_token,
        &[
            "job", "submit", "--name", "audited", "--pool", &pool, "--", "true",
        ],
    );
    assert!(submitted.status.success(), "{submitted:?}");
    let refused = corral(&follower, alpha_token, &["job", "terminate", "job-999"]);
    assert!(!refused.status.success(), "{refused:?}");

    let alpha_principal = format!("tenant-{alpha}/operator");
    let seen_by_alpha = records(&json(&corral(
        &address,
        alpha_token,
        &["audit", "-o", "json"],
    )));
    let submit = seen_by_alpha
        .iter()
        .find(|record| text(record, "kind") == "job_submit")
        .unwrap_or_else(|| panic!("alpha's submit is missing: {seen_by_alpha:?}"));
    assert_eq!(text(submit, "principal"), alpha_principal);
    assert_eq!(text(submit, "token"), "alpha-token");
    assert_eq!(text(submit, "outcome"), "applied");
    assert!(text(submit, "target").starts_with("job-"), "{submit}");
    assert_eq!(text(submit, "request_id").len(), 32, "{submit}");
    let terminate = seen_by_alpha
        .iter()
        .find(|record| text(record, "kind") == "job_terminate")
        .unwrap_or_else(|| panic!("alpha's refused terminate is missing: {seen_by_alpha:?}"));
    assert_eq!(text(terminate, "outcome"), "refused");
    assert!(
        text(terminate, "reason").contains("not found"),
        "{terminate}"
    );
    assert_eq!(text(terminate, "target"), "job-999");
    // Alpha sees only alpha's records (its own writes, and the admin's on its objects).
    assert!(seen_by_alpha
        .iter()
        .all(|record| record["tenant"].as_u64() == Some(alpha)));

    // Beta sees nothing of alpha's.
    let seen_by_beta = records(&json(&corral(
        &address,
        beta_token,
        &["audit", "-o", "json"],
    )));
    assert!(!seen_by_beta.is_empty(), "beta's token creation is beta's");
    assert!(seen_by_beta
        .iter()
        .all(|record| record["tenant"].as_u64() == Some(beta)
            && text(record, "principal") != alpha_principal));

    // The admin sees all, filtered by token name and kind, on another replica.
    let other = cluster.replicas[2].address.clone();
    let by_token = records(&json(&corral(
        &other,
        ADMIN_TOKEN,
        &["audit", "--principal", "alpha-token", "-o", "json"],
    )));
    let kinds: Vec<String> = by_token.iter().map(|record| text(record, "kind")).collect();
    assert_eq!(kinds, ["job_submit", "job_terminate"]);
    let everything = records(&json(&corral(
        &other,
        ADMIN_TOKEN,
        &["audit", "-o", "json"],
    )));
    assert!(everything.len() > seen_by_alpha.len() + seen_by_beta.len());
    assert!(everything
        .iter()
        .any(|record| text(record, "kind") == "tenant_create"
            && text(record, "principal") == "platform-admin"));
    let since_an_hour = records(&json(&corral(
        &other,
        ADMIN_TOKEN,
        &[
            "audit",
            "--since",
            "1h",
            "--kind",
            "job_terminate",
            "-o",
            "json",
        ],
    )));
    assert_eq!(since_an_hour.len(), 1);
    let until_long_ago = records(&json(&corral(
        &other,
        ADMIN_TOKEN,
        &["audit", "--until", "2000-01-01T00:00:00Z", "-o", "json"],
    )));
    assert!(until_long_ago.is_empty());

    // The table is for people: one line per record, refusals with their reason.
    let table = corral(&other, ADMIN_TOKEN, &["audit", "--kind", "job_terminate"]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("refused: ") && table.contains("alpha-token"),
        "{table}"
    );

    // A node's credential or a bad time is refused; nothing is printed as a record.
    let bad_time = corral(&address, ADMIN_TOKEN, &["audit", "--since", "yesterday"]);
    assert!(!bad_time.status.success());
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("is not a time"));
}
