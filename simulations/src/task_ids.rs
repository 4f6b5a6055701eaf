//! Tokio numbers tasks from one process-wide counter and files a runtime's tasks into
//! four lists by that number; when turmoil crashes a host it drops the host's runtime,
//! which drops the tasks list by list. Dropping a task closes its sockets, and each close
//! is a simulated message whose latency is the next random draw. So the order of drops,
//! and with it the rest of the run, depended on how many tasks earlier runs in the same
//! process had created: a seed replayed alone but not after another seed. Every run
//! starts with the counter at the same residue, as in a fresh process.

/// A multiple of tokio's list count for a one-thread runtime (4), with room to spare.
const ALIGNMENT: u64 = 64;

/// Advance tokio's task id counter until the next task created gets an id that is a
/// multiple of `ALIGNMENT`.
pub fn align() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a one-thread runtime without drivers needs no resources that can fail");
    for _ in 0..ALIGNMENT {
        let id: u64 = runtime
            .spawn(async {})
            .id()
            .to_string()
            .parse()
            .expect("tokio task ids display as numbers");
        if id % ALIGNMENT == ALIGNMENT - 1 {
            return;
        }
    }
    unreachable!("{ALIGNMENT} consecutive task ids cover every residue");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_task_after_aligning_has_an_aligned_id() {
        for _ in 0..3 {
            align();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let id: u64 = runtime.spawn(async {}).id().to_string().parse().unwrap();
            assert_eq!(id % ALIGNMENT, 0, "id {id}");
            // Some tasks in between, as a run creates.
            for _ in 0..(id % 7 + 5) {
                runtime.spawn(async {});
            }
        }
    }
}
