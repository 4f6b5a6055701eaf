//! Tests of the linearizability checker against two small models defined here: a single
//! register and a key-value store partitioned by key.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use simulations::linearizability::check;
use simulations::linearizability::{CheckResult, Model, Operation, Outcome, Violation};

/// Generous enough for every small history here; only the adversarial tests exhaust it.
const SEARCH_STEPS_FOR_SMALL_HISTORIES: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// A single register holding a number, initially 0.

#[derive(Debug)]
struct Register;

#[derive(Clone, Debug, PartialEq, Eq)]
enum RegisterInput {
    Write(u64),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RegisterOutput {
    Written,
    ReadValue(u64),
}

impl Model for Register {
    type State = u64;
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type PartitionKey = ();

    fn init(&self) -> u64 {
        0
    }

    fn step(&self, state: &u64, input: &RegisterInput, output: &RegisterOutput) -> Option<u64> {
        match (input, output) {
            (RegisterInput::Write(value), RegisterOutput::Written) => Some(*value),
            (RegisterInput::Read, RegisterOutput::ReadValue(value)) if value == state => {
                Some(*state)
            }
            _ => None,
        }
    }

    fn step_with_unknown_output(&self, state: &u64, input: &RegisterInput) -> u64 {
        match input {
            RegisterInput::Write(value) => *value,
            RegisterInput::Read => *state,
        }
    }

    fn partition_key(&self, _input: &RegisterInput) {}
}

type RegisterOperation = Operation<RegisterInput, RegisterOutput>;

fn write(client: u64, value: u64, call_at: u64, return_at: u64) -> RegisterOperation {
    Operation::returned(
        client,
        RegisterInput::Write(value),
        RegisterOutput::Written,
        call_at,
        return_at,
    )
}

fn write_with_unknown_outcome(client: u64, value: u64, call_at: u64) -> RegisterOperation {
    Operation::unknown_outcome(client, RegisterInput::Write(value), call_at)
}

fn read(client: u64, value: u64, call_at: u64, return_at: u64) -> RegisterOperation {
    Operation::returned(
        client,
        RegisterInput::Read,
        RegisterOutput::ReadValue(value),
        call_at,
        return_at,
    )
}

fn check_register(history: &[RegisterOperation]) -> CheckResult<'_, Register> {
    check(&Register, history, SEARCH_STEPS_FOR_SMALL_HISTORIES)
}

fn expect_violation<M: Model>(result: CheckResult<'_, M>) -> Violation<'_, M> {
    match result {
        CheckResult::NotLinearizable(violation) => violation,
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A key-value store; `partitioned` chooses whether the checker may split it by key, which
// never changes the answer, only the cost.

#[derive(Debug)]
struct KeyValueStore {
    partitioned: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyValueInput {
    Put { key: String, value: u64 },
    Get { key: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyValueOutput {
    Stored,
    Found(Option<u64>),
}

impl KeyValueInput {
    fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Get { key } => key,
        }
    }
}

impl Model for KeyValueStore {
    type State = BTreeMap<String, u64>;
    type Input = KeyValueInput;
    type Output = KeyValueOutput;
    type PartitionKey = Option<String>;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &KeyValueInput,
        output: &KeyValueOutput,
    ) -> Option<Self::State> {
        match (input, output) {
            (KeyValueInput::Put { .. }, KeyValueOutput::Stored) => {
                Some(self.step_with_unknown_output(state, input))
            }
            (KeyValueInput::Get { key }, KeyValueOutput::Found(found))
                if state.get(key) == found.as_ref() =>
            {
                Some(state.clone())
            }
            _ => None,
        }
    }

    fn step_with_unknown_output(&self, state: &Self::State, input: &KeyValueInput) -> Self::State {
        let mut next_state = state.clone();
        if let KeyValueInput::Put { key, value } = input {
            next_state.insert(key.clone(), *value);
        }
        next_state
    }

    fn partition_key(&self, input: &KeyValueInput) -> Option<String> {
        self.partitioned.then(|| input.key().to_owned())
    }
}

type KeyValueOperation = Operation<KeyValueInput, KeyValueOutput>;

const PARTITIONED: KeyValueStore = KeyValueStore { partitioned: true };
const UNPARTITIONED: KeyValueStore = KeyValueStore { partitioned: false };

fn put(client: u64, key: &str, value: u64, call_at: u64, return_at: u64) -> KeyValueOperation {
    Operation::returned(
        client,
        KeyValueInput::Put {
            key: key.to_owned(),
            value,
        },
        KeyValueOutput::Stored,
        call_at,
        return_at,
    )
}

fn get(
    client: u64,
    key: &str,
    found: Option<u64>,
    call_at: u64,
    return_at: u64,
) -> KeyValueOperation {
    Operation::returned(
        client,
        KeyValueInput::Get {
            key: key.to_owned(),
        },
        KeyValueOutput::Found(found),
        call_at,
        return_at,
    )
}

// ---------------------------------------------------------------------------------------------
// Basic shapes.

#[test]
fn empty_history_is_linearizable() {
    assert!(check_register(&[]).is_linearizable());
}

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        read(1, 0, 0, 10),
        write(1, 5, 20, 30),
        read(2, 5, 40, 50),
        write(2, 7, 60, 70),
        read(1, 7, 80, 90),
    ];
    assert!(check_register(&history).is_linearizable());
}

#[test]
fn read_overlapping_a_write_may_see_the_old_or_the_new_value() {
    for value_seen in [0, 1] {
        let history = [write(1, 1, 0, 10), read(2, value_seen, 5, 15)];
        assert!(
            check_register(&history).is_linearizable(),
            "read saw {value_seen}"
        );
    }
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    for value_seen in [1, 2] {
        let history = [
            write(1, 1, 0, 10),
            write(2, 2, 5, 15),
            read(3, value_seen, 20, 30),
        ];
        assert!(
            check_register(&history).is_linearizable(),
            "read saw {value_seen}"
        );
    }
}

#[test]
fn operations_whose_intervals_touch_count_as_concurrent() {
    let history = [write(1, 1, 0, 10), read(2, 0, 10, 20)];
    assert!(check_register(&history).is_linearizable());
}

#[test]
fn operation_returning_before_its_call_is_reported() {
    let history = [write(1, 1, 0, 10), read(2, 1, 30, 20)];
    assert!(matches!(
        check_register(&history),
        CheckResult::ReturnedBeforeCalled { history_index: 1 }
    ));
}

// ---------------------------------------------------------------------------------------------
// Violations.

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let history = [write(1, 1, 0, 10), read(2, 0, 20, 30)];
    let violation = expect_violation(check_register(&history));
    assert_eq!(violation.longest_linearizable_prefix, vec![&history[0]]);
    assert_eq!(violation.state_after_prefix, 1);
    assert_eq!(violation.operation_that_could_not_be_placed, &history[1]);
    assert_eq!(violation.candidates_rejected_by_model, vec![&history[1]]);
}

#[test]
fn violation_lists_every_concurrent_candidate_the_model_rejected() {
    let history = [
        write(1, 1, 0, 10),
        read(2, 5, 20, 40),
        read(3, 6, 25, 35),
        read(4, 1, 100, 110),
    ];
    let violation = expect_violation(check_register(&history));
    assert_eq!(violation.longest_linearizable_prefix, vec![&history[0]]);
    assert_eq!(violation.operation_that_could_not_be_placed, &history[2]);
    assert_eq!(
        violation.candidates_rejected_by_model,
        vec![&history[1], &history[2]]
    );
}

#[test]
fn acknowledged_write_that_a_later_read_never_sees_is_rejected() {
    let lost_second_write = [
        put(1, "job", 1, 0, 10),
        put(2, "job", 2, 20, 30),
        get(3, "job", Some(1), 40, 50),
    ];
    let violation = expect_violation(check(
        &PARTITIONED,
        &lost_second_write,
        SEARCH_STEPS_FOR_SMALL_HISTORIES,
    ));
    assert_eq!(violation.partition_key, Some("job".to_owned()));
    assert_eq!(
        violation.operation_that_could_not_be_placed,
        &lost_second_write[2]
    );

    let lost_only_write = [put(1, "job", 1, 0, 10), get(2, "job", None, 20, 30)];
    assert!(matches!(
        check(
            &PARTITIONED,
            &lost_only_write,
            SEARCH_STEPS_FOR_SMALL_HISTORIES
        ),
        CheckResult::NotLinearizable(_)
    ));
}

#[test]
fn value_seen_then_replaced_by_an_older_one_is_rejected() {
    let history = [
        write(1, 1, 0, 10),
        write(2, 2, 5, 15),
        read(3, 2, 20, 30),
        read(3, 1, 40, 50),
    ];
    assert!(matches!(
        check_register(&history),
        CheckResult::NotLinearizable(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Operations whose outcome is unknown.

#[test]
fn write_with_unknown_outcome_may_or_may_not_be_visible() {
    for value_seen in [1, 2] {
        let history = [
            write(1, 1, 0, 10),
            write_with_unknown_outcome(2, 2, 20),
            read(3, value_seen, 30, 40),
        ];
        assert!(
            check_register(&history).is_linearizable(),
            "read saw {value_seen}"
        );
    }
}

#[test]
fn write_with_unknown_outcome_may_take_effect_long_after_its_call() {
    let history = [
        write(1, 1, 0, 10),
        write_with_unknown_outcome(2, 2, 20),
        read(3, 1, 30, 40),
        read(3, 1, 1_000, 1_010),
        read(3, 2, 5_000, 5_010),
    ];
    assert!(check_register(&history).is_linearizable());
}

#[test]
fn write_with_unknown_outcome_cannot_be_visible_then_invisible() {
    let history = [
        write(1, 1, 0, 10),
        write_with_unknown_outcome(2, 2, 20),
        read(3, 2, 30, 40),
        read(3, 1, 50, 60),
    ];
    let violation = expect_violation(check_register(&history));
    assert_eq!(violation.operation_that_could_not_be_placed, &history[3]);
}

#[test]
fn write_with_unknown_outcome_cannot_take_effect_before_its_call() {
    let history = [read(1, 2, 0, 10), write_with_unknown_outcome(2, 2, 20)];
    assert!(matches!(
        check_register(&history),
        CheckResult::NotLinearizable(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Partitions.

#[test]
fn keys_are_checked_independently() {
    let history = [
        put(1, "a", 1, 0, 10),
        put(2, "b", 2, 5, 15),
        get(3, "a", Some(1), 20, 30),
        get(3, "b", Some(2), 20, 30),
        get(4, "c", None, 25, 35),
    ];
    assert!(check(&PARTITIONED, &history, SEARCH_STEPS_FOR_SMALL_HISTORIES).is_linearizable());
    assert!(check(&UNPARTITIONED, &history, SEARCH_STEPS_FOR_SMALL_HISTORIES).is_linearizable());
}

#[test]
fn violation_names_the_partition_it_happened_in() {
    let history = [
        put(1, "a", 1, 0, 10),
        put(2, "b", 2, 0, 10),
        get(3, "a", Some(1), 20, 30),
        get(3, "b", Some(1), 20, 30),
    ];
    let violation = expect_violation(check(
        &PARTITIONED,
        &history,
        SEARCH_STEPS_FOR_SMALL_HISTORIES,
    ));
    assert_eq!(violation.partition_key, Some("b".to_owned()));
    assert_eq!(violation.longest_linearizable_prefix, vec![&history[1]]);
}

/// `writes_per_key` concurrent puts on each key, then a get that sees the last of them, except
/// on the last key, where the get sees a value nobody wrote. Proving that last key wrong means
/// trying every order of its puts, which is cheap alone and hopeless mixed with the other keys.
fn many_keys_with_one_bad(key_count: usize, writes_per_key: u64) -> Vec<KeyValueOperation> {
    let mut history = Vec::new();
    for key_index in 0..key_count {
        let key = format!("key-{key_index}");
        for value in 1..=writes_per_key {
            history.push(put(value, &key, value, 0, 100));
        }
        let is_bad_key = key_index + 1 == key_count;
        let found = if is_bad_key { 999 } else { writes_per_key };
        history.push(get(0, &key, Some(found), 200, 210));
    }
    history
}

#[test]
fn partitioning_keeps_the_search_small() {
    let history = many_keys_with_one_bad(8, 8);
    let max_search_steps = 200_000;
    let violation = expect_violation(check(&PARTITIONED, &history, max_search_steps));
    assert_eq!(violation.partition_key, Some("key-7".to_owned()));
    assert!(matches!(
        check(&UNPARTITIONED, &history, max_search_steps),
        CheckResult::TimedOut {
            partition_key: None
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// Bounded search and determinism.

#[test]
fn step_budget_yields_timed_out_on_adversarial_history() {
    let concurrent_write_count = 40;
    let mut history: Vec<RegisterOperation> = (1..=concurrent_write_count)
        .map(|value| write(value, value, 0, 100))
        .collect();
    history.push(read(0, 999, 200, 210));
    assert!(matches!(
        check(&Register, &history, 100_000),
        CheckResult::TimedOut { partition_key: () }
    ));
}

#[test]
fn zero_step_budget_times_out_on_any_nonempty_history() {
    let history = [write(1, 1, 0, 10)];
    assert!(matches!(
        check(&Register, &history, 0),
        CheckResult::TimedOut { .. }
    ));
    assert!(check(&Register, &[], 0).is_linearizable());
}

#[test]
fn same_history_gives_the_same_violation() {
    let history = many_keys_with_one_bad(3, 5);
    let first = format!("{:?}", check(&PARTITIONED, &history, 1_000_000));
    let second = format!("{:?}", check(&PARTITIONED, &history, 1_000_000));
    assert!(first.starts_with("NotLinearizable"));
    assert_eq!(first, second);
}

// ---------------------------------------------------------------------------------------------
// Property: histories produced by a real sequential execution are linearizable, and remain so
// whatever their timing, as long as each operation's interval contains its real instant.

/// A value no generated put ever writes.
const VALUE_NEVER_WRITTEN: u64 = u64::MAX;
/// Instants of successive operations are this far apart; intervals stretch up to
/// `MAX_STRETCH` either side, so neighbours overlap often.
const INSTANT_SPACING: u64 = 10;
const MAX_STRETCH: u64 = 35;
const KEYS: [&str; 3] = ["alpha", "beta", "gamma"];

#[derive(Clone, Debug)]
struct PlannedOperation {
    is_put: bool,
    key_index: usize,
    called_before_instant: u64,
    returned_after_instant: u64,
    /// `Some(took_effect)` when the client never learns the outcome.
    timed_out: Option<bool>,
}

fn planned_operation() -> impl Strategy<Value = PlannedOperation> {
    (
        any::<bool>(),
        0..KEYS.len(),
        0..=MAX_STRETCH,
        0..=MAX_STRETCH,
        prop::option::weighted(0.15, any::<bool>()),
    )
        .prop_map(
            |(is_put, key_index, called_before_instant, returned_after_instant, timed_out)| {
                PlannedOperation {
                    is_put,
                    key_index,
                    called_before_instant,
                    returned_after_instant,
                    timed_out,
                }
            },
        )
}

/// Runs the plan one operation at a time against a real map, operation `n` at instant
/// `MAX_STRETCH + n * INSTANT_SPACING`, and records what each client would have seen.
fn execute_sequentially(plan: &[PlannedOperation]) -> Vec<KeyValueOperation> {
    let mut store: BTreeMap<String, u64> = BTreeMap::new();
    let mut history = Vec::new();
    for (index, planned) in plan.iter().enumerate() {
        let instant = MAX_STRETCH + index as u64 * INSTANT_SPACING;
        let key = KEYS[planned.key_index].to_owned();
        let took_effect = planned.timed_out.unwrap_or(true);
        let (input, output) = if planned.is_put {
            let value = index as u64;
            if took_effect {
                store.insert(key.clone(), value);
            }
            (KeyValueInput::Put { key, value }, KeyValueOutput::Stored)
        } else {
            let found = store.get(&key).copied();
            (KeyValueInput::Get { key }, KeyValueOutput::Found(found))
        };
        let call_at = instant - planned.called_before_instant;
        let client = index as u64;
        history.push(match planned.timed_out {
            Some(_) => Operation::unknown_outcome(client, input, call_at),
            None => Operation::returned(
                client,
                input,
                output,
                call_at,
                instant + planned.returned_after_instant,
            ),
        });
    }
    history
}

fn is_completed_get(operation: &KeyValueOperation) -> bool {
    matches!(
        operation.output,
        Outcome::Returned(KeyValueOutput::Found(_))
    )
}

proptest! {
    #[test]
    fn real_executions_are_linearizable_and_a_corrupted_read_is_not(
        plan in prop::collection::vec(planned_operation(), 1..40),
        corrupted_pick in any::<prop::sample::Index>(),
    ) {
        let mut history = execute_sequentially(&plan);
        prop_assert!(
            check(&PARTITIONED, &history, SEARCH_STEPS_FOR_SMALL_HISTORIES).is_linearizable()
        );

        let completed_gets: Vec<usize> = (0..history.len())
            .filter(|&index| is_completed_get(&history[index]))
            .collect();
        prop_assume!(!completed_gets.is_empty());
        let corrupted_index = completed_gets[corrupted_pick.index(completed_gets.len())];
        history[corrupted_index].output = Outcome::Returned(
            KeyValueOutput::Found(Some(VALUE_NEVER_WRITTEN)),
        );
        let corrupted_key = history[corrupted_index].input.key().to_owned();
        match check(&PARTITIONED, &history, SEARCH_STEPS_FOR_SMALL_HISTORIES) {
            CheckResult::NotLinearizable(violation) => {
                prop_assert_eq!(violation.partition_key, Some(corrupted_key));
            }
            other => prop_assert!(false, "expected NotLinearizable, got {:?}", other),
        }
    }
}
