//! A closed-loop load generator: `clients` tasks, each issuing one call at a time and the
//! next as soon as the previous one answered, for a warm-up and then a measured window.
//! A call counts when it completes inside the window; its latency is recorded. Failed
//! calls are counted apart and never in the throughput.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One call: `(client, sequence)` to the number of items it committed, or an error.
pub type Operation =
    Arc<dyn Fn(usize, u64) -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub clients: usize,
    pub seconds: f64,
    /// Calls that succeeded inside the window.
    pub calls: u64,
    /// Items committed by those calls (1 per call, or the batch size).
    pub items: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Per-call latency of the successful calls inside the window, sorted, microseconds.
    pub latencies_us: Vec<u64>,
}

impl LoadResult {
    pub fn items_per_second(&self) -> f64 {
        self.items as f64 / self.seconds
    }

    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((percentile / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[index] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us
            .last()
            .map_or(f64::NAN, |max| *max as f64 / 1000.0)
    }
}

struct ClientTally {
    calls: u64,
    items: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u64>,
}

pub async fn run(
    clients: usize,
    warmup: Duration,
    window: Duration,
    operation: Operation,
) -> LoadResult {
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + window;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let operation = operation.clone();
            tokio::spawn(async move {
                let mut tally = ClientTally {
                    calls: 0,
                    items: 0,
                    errors: 0,
                    first_error: None,
                    latencies_us: Vec::new(),
                };
                let mut sequence = 0u64;
                while Instant::now() < window_end {
                    let sent = Instant::now();
                    let outcome = operation(client, sequence).await;
                    sequence += 1;
                    let answered = Instant::now();
                    if answered < window_start || answered >= window_end {
                        continue;
                    }
                    match outcome {
                        Ok(items) => {
                            tally.calls += 1;
                            tally.items += items;
                            tally
                                .latencies_us
                                .push(answered.duration_since(sent).as_micros() as u64);
                        }
                        Err(error) => {
                            tally.errors += 1;
                            if tally.first_error.is_none() {
                                tally.first_error = Some(error);
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut result = LoadResult {
        clients,
        seconds: window.as_secs_f64(),
        ..LoadResult::default()
    };
    for task in tasks {
        let tally = task.await.expect("load client task");
        result.calls += tally.calls;
        result.items += tally.items;
        result.errors += tally.errors;
        if result.first_error.is_none() {
            result.first_error = tally.first_error;
        }
        result.latencies_us.extend(tally.latencies_us);
    }
    result.latencies_us.sort_unstable();
    result
}

/// Nearest-rank percentile of durations, in milliseconds.
pub fn percentile_of(sorted: &[Duration], percentile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}
