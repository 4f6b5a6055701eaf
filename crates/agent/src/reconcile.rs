//! Reconciliation, as a pure function: given the managers' desired replicas for a node
//! (the whole list of the latest `NodeAssignments`) and what this agent knows runs or ran
//! here, decide what to do — start, terminate, report, forget. No IO, no clock (the
//! caller passes `now_ms`), so every rule is unit- and property-tested.
//!
//! Rules (a replica is keyed by job, rank and generation):
//! - listed, not `stop`, nothing here: start it — unless the managers already recorded
//!   its start (`started`), then its process was lost: report exit 137 "lost"; and only
//!   once no other process of the same job and rank, nor one holding an overlapping
//!   device, still runs here (a stale one being terminated).
//! - listed with `stop` and running here: terminate it (reason "stopped"); its exit is
//!   reported because it is still listed when it ends.
//! - listed, running longer than its `max_runtime_ms`: terminate it ("max_runtime").
//! - listed, running, start not yet recorded by the managers nor reported by this agent
//!   (an adopted process): report its start.
//! - listed, exited here, exit not reported: report it. Never started twice.
//! - being started here (its process is being spawned): nothing — it is never started
//!   a second time, and the caller reports its start when the spawn finishes. If it is
//!   no longer wanted (not listed, or `stop`), terminate it (reason "stopped"): the
//!   caller ends it as soon as its spawn finishes. Until then it counts as running
//!   for the replicas that must wait for it to end.
//! - not listed and running (including older generations): stale, terminate it; its exit
//!   is not reported because it is not listed when it ends.
//! - not listed and exited: forget it (its state files are removed).

use std::collections::{BTreeMap, BTreeSet};

/// One replica incarnation: a job's rank at a placement generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    pub job: u64,
    pub rank: u32,
    pub generation: u64,
}

impl std::fmt::Display for ReplicaKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "job {} rank {} generation {}",
            self.job, self.rank, self.generation
        )
    }
}

/// What the managers want of one listed replica (the part reconciliation needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Desired {
    pub(crate) key: ReplicaKey,
    pub(crate) stop: bool,
    /// The managers recorded this replica's start.
    pub(crate) started: bool,
    /// 0: no limit.
    pub(crate) max_runtime_ms: u64,
    pub(crate) device_indices: Vec<u32>,
}

/// Why the agent ended (or reports the end of) a replica; the report's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExitReason {
    /// The process ended by itself.
    Exited,
    /// Ended because the managers asked (`stop`), or as stale.
    Stopped,
    /// Ended for running longer than its `max_runtime_ms`.
    MaxRuntime,
    /// Its process was gone with no recorded exit code.
    Lost,
    /// The kernel killed it for passing its memory limit.
    OomKilled,
}

impl ExitReason {
    /// The reason as reported to the managers.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "",
            ExitReason::Stopped => "stopped",
            ExitReason::MaxRuntime => "max_runtime",
            ExitReason::Lost => "lost",
            ExitReason::OomKilled => "oom_killed",
        }
    }
}

/// What this agent knows about one local replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Local {
    Running {
        /// A started report was queued by this agent run.
        started_reported: bool,
        /// Wall-clock start, for `max_runtime_ms`.
        started_at_ms: u64,
        /// Set once the agent asked the process to end.
        terminating: Option<ExitReason>,
        device_indices: Vec<u32>,
    },
    /// Its process is being spawned (off the caller's loop); no pid yet.
    Starting {
        /// Set once the agent was asked to end it: it is ended as soon as it started.
        terminating: Option<ExitReason>,
        device_indices: Vec<u32>,
    },
    Exited {
        /// Its exit report was queued.
        reported: bool,
    },
}

/// One step for the caller to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Spawn the listed replica.
    Start(ReplicaKey),
    /// SIGTERM, then SIGKILL after the grace period (for a starting replica: once its
    /// spawn finishes).
    Terminate(ReplicaKey, ExitReason),
    /// Queue its started report.
    ReportStarted(ReplicaKey),
    /// Queue its exited report (the code and reason the caller recorded).
    ReportExit(ReplicaKey),
    /// Queue an exited report with code 137 and reason "lost", and remember it exited.
    ReportLost(ReplicaKey),
    /// Drop the record and its state files.
    Forget(ReplicaKey),
}

/// What runs here and will not be kept: it must end before a replica that conflicts
/// with it (same job and rank, or a shared device) starts. Sets, so that a node with
/// hundreds of replicas waiting to start checks each in logarithmic time.
#[derive(Default)]
struct Ending {
    ranks: BTreeSet<(u64, u32)>,
    devices: BTreeSet<u32>,
}

impl Ending {
    fn add(&mut self, key: ReplicaKey, device_indices: &[u32]) {
        self.ranks.insert((key.job, key.rank));
        self.devices.extend(device_indices.iter().copied());
    }

    fn blocks(&self, desired: &Desired) -> bool {
        self.ranks.contains(&(desired.key.job, desired.key.rank))
            || desired
                .device_indices
                .iter()
                .any(|device| self.devices.contains(device))
    }
}

/// The actions that bring `locals` to `desired`, at most one per replica, in key order.
pub(crate) fn reconcile(
    desired: &[Desired],
    locals: &BTreeMap<ReplicaKey, Local>,
    now_ms: u64,
) -> Vec<Action> {
    let listed: BTreeMap<ReplicaKey, &Desired> = desired
        .iter()
        .map(|desired| (desired.key, desired))
        .collect();
    let mut actions = Vec::new();
    let mut ending = Ending::default();

    for (key, local) in locals {
        let wanted = listed.get(key);
        match local {
            Local::Running {
                started_reported,
                started_at_ms,
                terminating,
                device_indices,
            } => {
                let end = match (wanted, terminating) {
                    (_, Some(_)) => None,
                    (None, None) => Some(ExitReason::Stopped),
                    (Some(desired), None) if desired.stop => Some(ExitReason::Stopped),
                    (Some(desired), None)
                        if desired.max_runtime_ms > 0
                            && now_ms.saturating_sub(*started_at_ms) >= desired.max_runtime_ms =>
                    {
                        Some(ExitReason::MaxRuntime)
                    }
                    (Some(_), None) => None,
                };
                if let Some(reason) = end {
                    actions.push(Action::Terminate(*key, reason));
                }
                if terminating.is_some() || end.is_some() {
                    ending.add(*key, device_indices);
                } else if let Some(desired) = wanted {
                    if !desired.started && !started_reported {
                        actions.push(Action::ReportStarted(*key));
                    }
                }
            }
            Local::Starting {
                terminating,
                device_indices,
            } => {
                let unwanted = wanted.is_none_or(|desired| desired.stop);
                if terminating.is_none() && unwanted {
                    actions.push(Action::Terminate(*key, ExitReason::Stopped));
                }
                if terminating.is_some() || unwanted {
                    ending.add(*key, device_indices);
                }
            }
            Local::Exited { reported } => match wanted {
                None => actions.push(Action::Forget(*key)),
                Some(_) if !reported => actions.push(Action::ReportExit(*key)),
                Some(_) => {}
            },
        }
    }

    // Listed keys already looked at (a key listed twice gets one action).
    let mut seen = BTreeSet::new();
    for desired in desired {
        let key = desired.key;
        if locals.contains_key(&key) || desired.stop || !seen.insert(key) {
            continue;
        }
        if desired.started {
            actions.push(Action::ReportLost(key));
        } else if !ending.blocks(desired) {
            actions.push(Action::Start(key));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(job: u64, rank: u32, generation: u64) -> ReplicaKey {
        ReplicaKey {
            job,
            rank,
            generation,
        }
    }

    fn desired(key: ReplicaKey) -> Desired {
        Desired {
            key,
            stop: false,
            started: false,
            max_runtime_ms: 0,
            device_indices: Vec::new(),
        }
    }

    fn running(started_reported: bool) -> Local {
        Local::Running {
            started_reported,
            started_at_ms: 1_000,
            terminating: None,
            device_indices: Vec::new(),
        }
    }

    fn locals(entries: &[(ReplicaKey, Local)]) -> BTreeMap<ReplicaKey, Local> {
        entries.iter().cloned().collect()
    }

    #[test]
    fn starts_what_is_listed_and_absent() {
        let a = key(1, 0, 1);
        let b = key(1, 1, 1);
        let actions = reconcile(
            &[desired(a), desired(b)],
            &locals(&[(a, running(true))]),
            2_000,
        );
        assert_eq!(actions, vec![Action::Start(b)]);
    }

    #[test]
    fn never_starts_a_replica_that_already_exited_here() {
        let a = key(1, 0, 1);
        let actions = reconcile(
            &[desired(a)],
            &locals(&[(a, Local::Exited { reported: true })]),
            2_000,
        );
        assert_eq!(actions, vec![]);
        let actions = reconcile(
            &[desired(a)],
            &locals(&[(a, Local::Exited { reported: false })]),
            2_000,
        );
        assert_eq!(actions, vec![Action::ReportExit(a)]);
    }

    #[test]
    fn stale_processes_are_terminated_and_exits_of_unlisted_ones_forgotten() {
        let stale = key(1, 0, 1);
        let done = key(2, 0, 1);
        let actions = reconcile(
            &[],
            &locals(&[
                (stale, running(true)),
                (done, Local::Exited { reported: false }),
            ]),
            2_000,
        );
        assert_eq!(
            actions,
            vec![
                Action::Terminate(stale, ExitReason::Stopped),
                Action::Forget(done)
            ]
        );
    }

    #[test]
    fn a_newer_generation_starts_only_after_the_older_one_ended() {
        let old = key(1, 0, 1);
        let new = key(1, 0, 2);
        let actions = reconcile(&[desired(new)], &locals(&[(old, running(true))]), 2_000);
        assert_eq!(actions, vec![Action::Terminate(old, ExitReason::Stopped)]);
        // Still terminating: still waiting.
        let terminating = Local::Running {
            started_reported: true,
            started_at_ms: 1_000,
            terminating: Some(ExitReason::Stopped),
            device_indices: Vec::new(),
        };
        let actions = reconcile(&[desired(new)], &locals(&[(old, terminating)]), 2_000);
        assert_eq!(actions, vec![]);
        // Ended: forgotten, and the new one starts.
        let actions = reconcile(
            &[desired(new)],
            &locals(&[(old, Local::Exited { reported: false })]),
            2_000,
        );
        assert_eq!(actions, vec![Action::Forget(old), Action::Start(new)]);
    }

    #[test]
    fn a_start_waits_for_an_ending_process_on_the_same_device() {
        let old = key(1, 0, 1);
        let new = key(2, 0, 1);
        let holding = Local::Running {
            started_reported: true,
            started_at_ms: 0,
            terminating: None,
            device_indices: vec![3, 4],
        };
        let wants = Desired {
            device_indices: vec![4],
            ..desired(new)
        };
        let actions = reconcile(
            std::slice::from_ref(&wants),
            &locals(&[(old, holding.clone())]),
            1,
        );
        assert_eq!(actions, vec![Action::Terminate(old, ExitReason::Stopped)]);
        let elsewhere = Desired {
            device_indices: vec![5],
            ..wants
        };
        let actions = reconcile(&[elsewhere], &locals(&[(old, holding)]), 1);
        assert_eq!(
            actions,
            vec![
                Action::Terminate(old, ExitReason::Stopped),
                Action::Start(new)
            ]
        );
    }

    #[test]
    fn stop_terminates_and_the_exit_is_then_reported() {
        let a = key(1, 0, 1);
        let stop = Desired {
            stop: true,
            started: true,
            ..desired(a)
        };
        let actions = reconcile(
            std::slice::from_ref(&stop),
            &locals(&[(a, running(true))]),
            2_000,
        );
        assert_eq!(actions, vec![Action::Terminate(a, ExitReason::Stopped)]);
        let actions = reconcile(
            std::slice::from_ref(&stop),
            &locals(&[(a, Local::Exited { reported: false })]),
            2_000,
        );
        assert_eq!(actions, vec![Action::ReportExit(a)]);
        // A stopped replica with no process here at all is not started.
        assert_eq!(
            reconcile(
                &[Desired {
                    started: false,
                    ..stop
                }],
                &locals(&[]),
                0
            ),
            vec![]
        );
    }

    #[test]
    fn max_runtime_is_measured_from_the_start() {
        let a = key(1, 0, 1);
        let limited = Desired {
            max_runtime_ms: 500,
            started: true,
            ..desired(a)
        };
        assert_eq!(
            reconcile(
                std::slice::from_ref(&limited),
                &locals(&[(a, running(true))]),
                1_499
            ),
            vec![]
        );
        assert_eq!(
            reconcile(&[limited], &locals(&[(a, running(true))]), 1_500),
            vec![Action::Terminate(a, ExitReason::MaxRuntime)]
        );
    }

    #[test]
    fn adopted_processes_report_their_start_once_unless_recorded() {
        let a = key(1, 0, 1);
        assert_eq!(
            reconcile(&[desired(a)], &locals(&[(a, running(false))]), 0),
            vec![Action::ReportStarted(a)]
        );
        let recorded = Desired {
            started: true,
            ..desired(a)
        };
        assert_eq!(
            reconcile(&[recorded], &locals(&[(a, running(false))]), 0),
            vec![]
        );
        assert_eq!(
            reconcile(&[desired(a)], &locals(&[(a, running(true))]), 0),
            vec![]
        );
    }

    #[test]
    fn a_recorded_start_with_nothing_here_is_lost() {
        let a = key(1, 0, 1);
        let recorded = Desired {
            started: true,
            ..desired(a)
        };
        assert_eq!(
            reconcile(&[recorded], &locals(&[]), 0),
            vec![Action::ReportLost(a)]
        );
    }

    #[test]
    fn duplicate_listings_start_once() {
        let a = key(1, 0, 1);
        assert_eq!(
            reconcile(&[desired(a), desired(a)], &locals(&[]), 0),
            vec![Action::Start(a)]
        );
    }

    fn starting(terminating: Option<ExitReason>) -> Local {
        Local::Starting {
            terminating,
            device_indices: Vec::new(),
        }
    }

    #[test]
    fn a_starting_replica_is_left_alone_while_it_is_wanted() {
        let a = key(1, 0, 1);
        assert_eq!(
            reconcile(&[desired(a)], &locals(&[(a, starting(None))]), 0),
            vec![],
            "neither started again nor reported before its spawn finished"
        );
    }

    #[test]
    fn a_starting_replica_no_longer_wanted_is_ended_once_and_holds_back_its_successor() {
        let old = key(1, 0, 1);
        let new = key(1, 0, 2);
        let stopped = Desired {
            stop: true,
            ..desired(old)
        };
        assert_eq!(
            reconcile(&[stopped], &locals(&[(old, starting(None))]), 0),
            vec![Action::Terminate(old, ExitReason::Stopped)]
        );
        assert_eq!(
            reconcile(&[desired(new)], &locals(&[(old, starting(None))]), 0),
            vec![Action::Terminate(old, ExitReason::Stopped)],
            "generation 2 waits for generation 1's process to end"
        );
        assert_eq!(
            reconcile(
                &[desired(new)],
                &locals(&[(old, starting(Some(ExitReason::Stopped)))]),
                0
            ),
            vec![],
            "asked once"
        );
    }

    /// Carries out `actions` on a model of the node, as the agent would, with processes
    /// that end the moment they are asked to (and spawns that finish in the next round).
    fn apply(locals: &mut BTreeMap<ReplicaKey, Local>, desired: &[Desired], actions: &[Action]) {
        for action in actions {
            match *action {
                Action::Start(key) => {
                    let devices = desired
                        .iter()
                        .find(|desired| desired.key == key)
                        .map(|desired| desired.device_indices.clone())
                        .unwrap_or_default();
                    locals.insert(
                        key,
                        Local::Starting {
                            terminating: None,
                            device_indices: devices,
                        },
                    );
                }
                Action::Terminate(key, reason) => {
                    if let Some(Local::Starting { terminating, .. }) = locals.get_mut(&key) {
                        *terminating = Some(reason);
                    } else {
                        locals.insert(key, Local::Exited { reported: false });
                    }
                }
                Action::ReportStarted(key) => {
                    if let Some(Local::Running {
                        started_reported, ..
                    }) = locals.get_mut(&key)
                    {
                        *started_reported = true;
                    }
                }
                Action::ReportExit(key) | Action::ReportLost(key) => {
                    locals.insert(key, Local::Exited { reported: true });
                }
                Action::Forget(key) => {
                    locals.remove(&key);
                }
            }
        }
    }

    fn arb_key() -> impl Strategy<Value = ReplicaKey> {
        (0u64..3, 0u32..2, 0u64..3).prop_map(|(job, rank, generation)| key(job, rank, generation))
    }

    /// A desired list with distinct keys (as the managers send it).
    fn arb_desired() -> impl Strategy<Value = Vec<Desired>> {
        let attributes = (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(0u64), 1u64..2_000],
            proptest::collection::vec(0u32..4, 0..2),
        );
        proptest::collection::btree_map(arb_key(), attributes, 0..6).prop_map(|listed| {
            listed
                .into_iter()
                .map(
                    |(key, (stop, started, max_runtime_ms, device_indices))| Desired {
                        key,
                        stop,
                        started,
                        max_runtime_ms,
                        device_indices,
                    },
                )
                .collect()
        })
    }

    fn arb_local() -> impl Strategy<Value = Local> {
        prop_oneof![
            (
                any::<bool>(),
                0u64..2_000,
                proptest::option::of(Just(ExitReason::Stopped)),
                proptest::collection::vec(0u32..4, 0..2)
            )
                .prop_map(
                    |(started_reported, started_at_ms, terminating, device_indices)| {
                        Local::Running {
                            started_reported,
                            started_at_ms,
                            terminating,
                            device_indices,
                        }
                    }
                ),
            (
                proptest::option::of(Just(ExitReason::Stopped)),
                proptest::collection::vec(0u32..4, 0..2)
            )
                .prop_map(|(terminating, device_indices)| Local::Starting {
                    terminating,
                    device_indices,
                }),
            any::<bool>().prop_map(|reported| Local::Exited { reported }),
        ]
    }

    proptest! {
        #[test]
        fn reconciliation_is_safe_and_converges(
            desired in arb_desired(),
            locals in proptest::collection::btree_map(arb_key(), arb_local(), 0..6),
            now_ms in 0u64..4_000,
        ) {
            let actions = reconcile(&desired, &locals, now_ms);
            let listed = |key: &ReplicaKey| desired.iter().find(|desired| desired.key == *key);

            // At most one action per replica.
            let mut seen = std::collections::BTreeSet::new();
            for action in &actions {
                let key = match action {
                    Action::Start(key) | Action::Terminate(key, _) | Action::ReportStarted(key)
                    | Action::ReportExit(key) | Action::ReportLost(key) | Action::Forget(key) => *key,
                };
                prop_assert!(seen.insert(key), "two actions for {key}: {actions:?}");
            }
            for action in &actions {
                match action {
                    Action::Start(key) => {
                        // Never a second copy, never a stopped or already recorded one.
                        prop_assert!(!locals.contains_key(key));
                        let wanted = listed(key).unwrap();
                        prop_assert!(!wanted.stop && !desired.iter().any(|d| d.key == *key && d.started));
                    }
                    Action::Terminate(key, reason) => {
                        let is_untouched = matches!(
                            locals.get(key),
                            Some(Local::Running { terminating: None, .. })
                                | Some(Local::Starting { terminating: None, .. })
                        );
                        prop_assert!(is_untouched);
                        match listed(key) {
                            None => prop_assert_eq!(*reason, ExitReason::Stopped),
                            Some(wanted) if wanted.stop => prop_assert_eq!(*reason, ExitReason::Stopped),
                            Some(_) => prop_assert_eq!(*reason, ExitReason::MaxRuntime),
                        }
                    }
                    Action::ReportStarted(key) => {
                        prop_assert!(listed(key).is_some());
                        let is_unreported = matches!(
                            locals.get(key),
                            Some(Local::Running { started_reported: false, .. })
                        );
                        prop_assert!(is_unreported);
                    }
                    Action::ReportExit(key) => {
                        prop_assert!(listed(key).is_some());
                        prop_assert_eq!(locals.get(key), Some(&Local::Exited { reported: false }));
                    }
                    Action::ReportLost(key) => {
                        prop_assert!(listed(key).is_some() && !locals.contains_key(key));
                    }
                    Action::Forget(key) => {
                        prop_assert!(listed(key).is_none());
                        let is_exited = matches!(locals.get(key), Some(Local::Exited { .. }));
                        prop_assert!(is_exited);
                    }
                }
            }
            // Every unlisted running or starting process that is not already ending is
            // terminated; so is a starting one that is stopped.
            for (key, local) in &locals {
                let running = matches!(local, Local::Running { terminating: None, .. });
                let starting = matches!(local, Local::Starting { terminating: None, .. });
                let unwanted = listed(key).is_none_or(|wanted| wanted.stop);
                if (running && listed(key).is_none()) || (starting && unwanted) {
                    prop_assert!(actions.contains(&Action::Terminate(*key, ExitReason::Stopped)));
                }
            }

            // Carrying the actions out (processes end at once) converges: a few rounds
            // later nothing is left to do, and what runs is exactly what is listed.
            let mut model = locals.clone();
            let mut last = actions;
            for _ in 0..8 {
                apply(&mut model, &desired, &last);
                // Spawns finish; processes asked to end (those of the input too) end.
                for local in model.values_mut() {
                    *local = match &*local {
                        Local::Running { terminating: Some(_), .. }
                        | Local::Starting { terminating: Some(_), .. } => {
                            Local::Exited { reported: false }
                        }
                        Local::Starting { terminating: None, device_indices } => Local::Running {
                            started_reported: true,
                            started_at_ms: 0,
                            terminating: None,
                            device_indices: device_indices.clone(),
                        },
                        other => other.clone(),
                    };
                }
                last = reconcile(&desired, &model, now_ms);
            }
            prop_assert!(last.is_empty(), "still acting: {last:?} on {model:?}");
            for (key, local) in &model {
                prop_assert!(listed(key).is_some(), "{key} kept but not listed");
                if let Local::Running { .. } = local {
                    prop_assert!(!listed(key).unwrap().stop);
                }
            }
        }
    }
}
