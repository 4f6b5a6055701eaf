//! Leader failover: SIGKILL the leader of a 3-replica cluster and time, from the kill,
//! (1) the first submit that is committed (sent to the surviving replicas in turn; a
//! follower forwards it to the new leader) and (2) the moment that job is Running, i.e.
//! the new leader's scheduler loop has placed it and the placement is committed. Then
//! the killed replica restarts from its disk and the next kill waits until all three
//! have applied the same index with the same digest.

use crate::corral_cluster::{admin, seed, CorralCluster, ADMIN_TOKEN};
use crate::spec;
use corral_client::{pb, AdminStub};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct FailoverSample {
    pub old_leader: u64,
    /// Kill to the first committed submit.
    pub write: Duration,
    /// Kill to that job observed Running (placed by the new leader's scheduler).
    pub scheduled: Duration,
    /// Submit attempts refused or failed before one was committed.
    pub failed_attempts: u32,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(2);

pub async fn run(
    binary: &Path,
    directory: &Path,
    kills: usize,
) -> Result<Vec<FailoverSample>, String> {
    let mut cluster = CorralCluster::start(binary, directory, 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let world = seed(&cluster.admin(leader, ADMIN_TOKEN))
        .await
        .map_err(|status| format!("seed: {}", status.message()))?;
    cluster.wait_for_agreement(Duration::from_secs(30)).await?;
    let mut samples = Vec::new();
    for kill in 0..kills {
        let leader_index = cluster.wait_for_leader(STEP_TIMEOUT).await?;
        let old_leader = cluster.replicas[leader_index].id;
        // Clients of the survivors, connected before the kill.
        let survivors: Vec<AdminStub> = cluster
            .running()
            .filter(|(index, _)| *index != leader_index)
            .map(|(_, replica)| {
                admin(
                    &replica.address,
                    &world.tenant_token,
                    Duration::from_secs(2),
                )
            })
            .collect();
        for survivor in &survivors {
            survivor
                .clone()
                .cluster_status(pb::ClusterStatusRequest::default())
                .await
                .map_err(|status| format!("survivor status: {}", status.message()))?;
        }

        let killed = Instant::now();
        cluster.kill(leader_index);
        let mut failed_attempts = 0;
        let mut attempt = 0usize;
        let job = loop {
            let spec = spec::job_spec(world.public_pool, 900, kill as u64 * 1_000 + attempt as u64);
            let survivor = &survivors[attempt % survivors.len()];
            attempt += 1;
            match survivor
                .clone()
                .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
                .await
            {
                Ok(response) => break response.into_inner().job,
                Err(_) => failed_attempts += 1,
            }
            if killed.elapsed() > STEP_TIMEOUT {
                return Err(format!(
                    "kill {kill}: no submit committed within {STEP_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        let write = killed.elapsed();
        'placed: loop {
            for survivor in &survivors {
                let read = survivor
                    .clone()
                    .get_job(pb::GetJobRequest {
                        job,
                        read: Some(pb::ReadOptions { stale: true }),
                        reveal_secrets: false,
                    })
                    .await;
                if read.is_ok_and(|job| job.into_inner().state == "Running") {
                    break 'placed;
                }
            }
            if killed.elapsed() > STEP_TIMEOUT {
                return Err(format!(
                    "kill {kill}: job {job} not Running within {STEP_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let scheduled = killed.elapsed();
        println!(
            "  kill {:>2}: leader {old_leader} killed; write after {:>4.0} ms, job Running after {:>4.0} ms ({failed_attempts} failed attempts)",
            kill + 1,
            write.as_secs_f64() * 1000.0,
            scheduled.as_secs_f64() * 1000.0
        );
        samples.push(FailoverSample {
            old_leader,
            write,
            scheduled,
            failed_attempts,
        });

        cluster.spawn(leader_index);
        cluster.wait_for_agreement(Duration::from_secs(60)).await?;
        // Let the restarted replica settle as a follower before the next kill.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(samples)
}
