//! Secret environment values through the `corral` binary against a real cluster: the
//! job's listings, events and audit records show them redacted to everyone; its own
//! tenant's operator reads them on explicit request; nobody else can; no replica logs
//! them.

use crate::cluster::define_world;
use crate::common;
use common::{Admin, Cluster, ADMIN_TOKEN};
use std::process::Output;
use std::time::Duration;

const SECRET_VALUE: &str = "hf_s3cr3t-value-9f8e7d";

fn corral(address: &str, token: &str, args: &[&str]) -> Output {
    common::corral_command(address, token)
        .args(args)
        .env("FROM_MY_ENV", "from-the-environment")
        .output()
        .expect("run corral")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_environment_values_are_redacted_except_for_their_tenant_on_request() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();
    let admin = Admin::connect(&address, ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    let (alpha, beta) = (&world.tenant_tokens[0], &world.tenant_tokens[1]);
    let pool = world.public_pool.to_string();
    let secret = format!("HF_TOKEN={SECRET_VALUE}");
    let submitted = stdout(&corral(
        &address,
        alpha,
        &[
            "job",
            "submit",
            "--name",
            "with-secrets",
            "--pool",
            &pool,
            "--env",
            "EPOCHS=3",
            "--secret-env",
            &secret,
            "--secret-env",
            "FROM_MY_ENV",
            "-o",
            "json",
            "--",
            "true",
        ],
    ));
    let job: serde_json::Value = serde_json::from_str(&submitted).expect("JSON");
    let job = job["job"].as_u64().expect("a job id").to_string();

    // Redacted in a plain get, for the tenant and the platform admin, and in listings.
    for token in [alpha.as_str(), ADMIN_TOKEN] {
        let shown = stdout(&corral(
            &address,
            token,
            &["job", "get", &job, "-o", "json"],
        ));
        let shown: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
        let secrets = &shown["spec"]["secret_environment"];
        assert_eq!(secrets["HF_TOKEN"], "<redacted>", "{shown}");
        assert_eq!(secrets["FROM_MY_ENV"], "<redacted>", "{shown}");
        assert_eq!(shown["spec"]["environment"]["EPOCHS"], "3");
        let listed = stdout(&corral(&address, token, &["job", "list", "-o", "json"]));
        assert!(listed.contains("<redacted>") && !listed.contains(SECRET_VALUE));
    }
    let table = stdout(&corral(&address, alpha, &["job", "get", &job]));
    assert!(table.contains("HF_TOKEN=<redacted>"), "{table}");

    // Revealed to the job's own operator, on request.
    let revealed = stdout(&corral(
        &address,
        alpha,
        &["job", "get", &job, "--show-secrets", "-o", "json"],
    ));
    let revealed: serde_json::Value = serde_json::from_str(&revealed).expect("JSON");
    assert_eq!(
        revealed["spec"]["secret_environment"]["HF_TOKEN"],
        SECRET_VALUE
    );
    assert_eq!(
        revealed["spec"]["secret_environment"]["FROM_MY_ENV"],
        "from-the-environment"
    );
    // Not to the platform admin, nor to another tenant (for whom the job does not exist).
    let by_admin = corral(
        &address,
        ADMIN_TOKEN,
        &["job", "get", &job, "--show-secrets"],
    );
    assert!(!by_admin.status.success());
    assert!(
        String::from_utf8_lossy(&by_admin.stderr).contains("may reveal"),
        "{by_admin:?}"
    );
    assert!(!String::from_utf8_lossy(&by_admin.stdout).contains(SECRET_VALUE));
    let by_beta = corral(&address, beta, &["job", "get", &job, "--show-secrets"]);
    assert!(!by_beta.status.success());
    assert!(!String::from_utf8_lossy(&by_beta.stdout).contains(SECRET_VALUE));

    // Not in events, the audit trail or any replica's log.
    let events = stdout(&corral(&address, ADMIN_TOKEN, &["events", "-o", "json"]));
    assert!(events.contains("JobSubmitted"), "{events}");
    let audit = stdout(&corral(&address, ADMIN_TOKEN, &["audit", "-o", "json"]));
    assert!(audit.contains("job_submit"), "{audit}");
    for text in [&events, &audit, &cluster.log_of(1)] {
        assert!(!text.contains(SECRET_VALUE));
        assert!(!text.contains("from-the-environment"));
    }
}
