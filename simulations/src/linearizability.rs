//! Linearizability checking for the histories that simulations record.
//!
//! This module owns one question: could the operations of a concurrent history have taken
//! effect one at a time, each at a single instant between its call and its return, in an
//! order that a sequential [`Model`] accepts? It answers with the algorithm of Wing & Gong as
//! refined by Lowe, in the shape porcupine (anishathalye/porcupine) gives it: a depth-first
//! search over the call and return events in time order that tries to place ("linearize") each
//! pending operation next, backs up when an operation returns before it could be placed, and
//! remembers every (set of placed operations, model state) pair it has explored so that no pair
//! is searched twice.
//!
//! # Times
//! `call_at` and `return_at` are logical times in any unit that only grows (the simulations use
//! simulated nanoseconds); the checker only compares them. Two operations whose intervals touch
//! (one returns at the very time the other is called) count as concurrent, which can only make
//! the checker accept more histories, never reject a valid one.
//!
//! # Operations whose outcome is unknown
//! A request that timed out may or may not have taken effect, and may still take effect later.
//! The checker handles this itself instead of asking every model to invent a "maybe" output:
//! such an operation has [`Outcome::Unknown`], its `return_at` is ignored and treated as
//! infinity ([`NEVER_RETURNED`]), and [`Model::step_with_unknown_output`] says what state it
//! leaves behind if it took effect. The search may then place it at any point after its call,
//! and placing it after every other operation is the same as "it never took effect", because
//! nothing observed it. It takes effect at most once, so it cannot be seen and then unseen.
//!
//! # Partitions
//! [`Model::partition_key`] splits a history into independent sub-histories (for example one
//! per job name) that are checked separately, in ascending key order. This is what keeps the
//! search small: its cost grows with the concurrency inside one partition, not across them.
//!
//! # Bounded search
//! Checking linearizability is NP-complete, so every call of [`check`] takes a
//! `max_search_steps` budget shared by all partitions. A step is one look at one event (one
//! model step and one lookup in the explored set at most, or one backtrack). When the budget
//! runs out the answer is [`CheckResult::TimedOut`], never a guess. Memory is bounded by the
//! budget too: the explored set gains at most one entry per step.
//!
//! # Determinism
//! There is no clock, no randomness and no dependence on hash iteration order: partitions are
//! visited in key order, events are ordered by (time, calls before returns, position in the
//! history), and the explored set is only ever asked "have we been here?". The same model and
//! history always give the same result, down to the reported violation.
//!
//! `tests/linearizability.rs` has two small example models: a register and a key-value store.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fmt::Debug;
use std::hash::Hash;

/// `return_at` of an operation that never returned: later than every other time.
pub const NEVER_RETURNED: u64 = u64::MAX;

/// A sequential specification of the object whose history is checked.
pub trait Model {
    /// Everything that determines how the object answers next. The search memoises on it, so
    /// two equal states must behave identically.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Debug;
    /// What the client was told.
    type Output: Debug;
    /// Identifies an independent part of the object (for example a job name); use `()` when
    /// the whole object is one part.
    type PartitionKey: Ord + Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` and answers `output`, or `None` if that
    /// answer is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The state after `input` takes effect in `state` when nobody saw its answer (the request
    /// timed out). It cannot fail: whatever the object answered, the operation was possible.
    fn step_with_unknown_output(&self, state: &Self::State, input: &Self::Input) -> Self::State;

    /// The partition `input` belongs to. Operations in different partitions must never affect
    /// each other's outputs; operations without a natural key all go into one partition.
    fn partition_key(&self, input: &Self::Input) -> Self::PartitionKey;
}

/// What the client learned about an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<O> {
    /// The operation returned this output at `return_at`.
    Returned(O),
    /// The client never learned the output (for example a timeout): the operation may take
    /// effect at any time after its call, or never. `return_at` is ignored.
    Unknown,
}

/// One entry of a history: a call by `client` at `call_at` and what came back at `return_at`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation<I, O> {
    /// Who issued the operation; only reported, never used by the search.
    pub client: u64,
    pub input: I,
    pub output: Outcome<O>,
    /// Logical time at which the call was made.
    pub call_at: u64,
    /// Logical time at which the output arrived; must not be before `call_at`. Ignored, and
    /// treated as [`NEVER_RETURNED`], when the outcome is [`Outcome::Unknown`].
    pub return_at: u64,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output`.
    pub fn returned(client: u64, input: I, output: O, call_at: u64, return_at: u64) -> Self {
        Self {
            client,
            input,
            output: Outcome::Returned(output),
            call_at,
            return_at,
        }
    }

    /// An operation whose output the client never learned.
    pub fn unknown_outcome(client: u64, input: I, call_at: u64) -> Self {
        Self {
            client,
            input,
            output: Outcome::Unknown,
            call_at,
            return_at: NEVER_RETURNED,
        }
    }

    /// The latest time at which the operation can have taken effect.
    pub fn effective_return_at(&self) -> u64 {
        match self.output {
            Outcome::Returned(_) => self.return_at,
            Outcome::Unknown => NEVER_RETURNED,
        }
    }
}

/// The operation type that histories of model `M` are made of.
pub type ModelOperation<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// The answer of [`check`].
pub enum CheckResult<'history, M: Model> {
    /// Every partition has an order of its operations that respects real time and the model.
    Linearizable,
    /// One partition has no such order; the first one in key order is described.
    NotLinearizable(Violation<'history, M>),
    /// The step budget ran out while searching this partition. Partitions before it in key
    /// order are linearizable; later ones were not checked.
    TimedOut { partition_key: M::PartitionKey },
    /// The operation at this index of the history returned before it was called, so the history
    /// is malformed and nothing was checked.
    ReturnedBeforeCalled { history_index: usize },
}

impl<M: Model> CheckResult<'_, M> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }
}

/// Why a partition is not linearizable, told through the furthest the search got.
pub struct Violation<'history, M: Model> {
    pub partition_key: M::PartitionKey,
    /// The longest sequence of operations the search managed to place, in the order it placed
    /// them: it respects real time and the model accepts it.
    pub longest_linearizable_prefix: Vec<&'history ModelOperation<M>>,
    /// The model state after `longest_linearizable_prefix`.
    pub state_after_prefix: M::State,
    /// The first operation (by return time) outside the prefix: it had to take effect before it
    /// returned, and neither it nor anything concurrent with it could go next.
    pub operation_that_could_not_be_placed: &'history ModelOperation<M>,
    /// Every operation that could have gone right after the prefix in real-time order (called
    /// before `operation_that_could_not_be_placed` returned, not in the prefix), including that
    /// operation itself. The model rejects each of them from `state_after_prefix`.
    pub candidates_rejected_by_model: Vec<&'history ModelOperation<M>>,
}

impl<M: Model> Debug for CheckResult<'_, M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable => formatter.write_str("Linearizable"),
            Self::NotLinearizable(violation) => formatter
                .debug_tuple("NotLinearizable")
                .field(violation)
                .finish(),
            Self::TimedOut { partition_key } => formatter
                .debug_struct("TimedOut")
                .field("partition_key", partition_key)
                .finish(),
            Self::ReturnedBeforeCalled { history_index } => formatter
                .debug_struct("ReturnedBeforeCalled")
                .field("history_index", history_index)
                .finish(),
        }
    }
}

impl<M: Model> Debug for Violation<'_, M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Violation")
            .field("partition_key", &self.partition_key)
            .field(
                "longest_linearizable_prefix",
                &self.longest_linearizable_prefix,
            )
            .field("state_after_prefix", &self.state_after_prefix)
            .field(
                "operation_that_could_not_be_placed",
                &self.operation_that_could_not_be_placed,
            )
            .field(
                "candidates_rejected_by_model",
                &self.candidates_rejected_by_model,
            )
            .finish()
    }
}

/// Checks whether `history` is linearizable with respect to `model`.
///
/// The search is always bounded: it looks at no more than `max_search_steps` events in total,
/// across all partitions, and answers [`CheckResult::TimedOut`] when that is not enough. With
/// little concurrency the search needs a few steps per event; with many operations in flight at
/// once it can need exponentially many. The history need not be sorted.
pub fn check<'history, M: Model>(
    model: &M,
    history: &'history [ModelOperation<M>],
    max_search_steps: u64,
) -> CheckResult<'history, M> {
    if let Some(history_index) = first_operation_returned_before_called(history) {
        return CheckResult::ReturnedBeforeCalled { history_index };
    }
    let mut budget = SearchBudget {
        remaining_steps: max_search_steps,
    };
    for (partition_key, operations) in partition_by_key(model, history) {
        match Search::new(model, &operations).run(&mut budget) {
            SearchOutcome::Linearized => {}
            SearchOutcome::BudgetExhausted => return CheckResult::TimedOut { partition_key },
            SearchOutcome::Stuck(longest_prefix) => {
                return CheckResult::NotLinearizable(describe_violation(
                    model,
                    partition_key,
                    &operations,
                    longest_prefix,
                ));
            }
        }
    }
    CheckResult::Linearizable
}

fn first_operation_returned_before_called<I, O>(history: &[Operation<I, O>]) -> Option<usize> {
    history
        .iter()
        .position(|operation| operation.effective_return_at() < operation.call_at)
}

/// Groups operations by partition key, keeping history order inside each partition so that the
/// search, and therefore the result, does not depend on anything but the history.
fn partition_by_key<'history, M: Model>(
    model: &M,
    history: &'history [ModelOperation<M>],
) -> BTreeMap<M::PartitionKey, Vec<&'history ModelOperation<M>>> {
    let mut partitions: BTreeMap<M::PartitionKey, Vec<&'history ModelOperation<M>>> =
        BTreeMap::new();
    for operation in history {
        partitions
            .entry(model.partition_key(&operation.input))
            .or_default()
            .push(operation);
    }
    partitions
}

fn step_operation<M: Model>(
    model: &M,
    state: &M::State,
    operation: &ModelOperation<M>,
) -> Option<M::State> {
    match &operation.output {
        Outcome::Returned(output) => model.step(state, &operation.input, output),
        Outcome::Unknown => Some(model.step_with_unknown_output(state, &operation.input)),
    }
}

struct SearchBudget {
    remaining_steps: u64,
}

impl SearchBudget {
    /// Spends one step; false when none is left.
    fn take_step(&mut self) -> bool {
        match self.remaining_steps.checked_sub(1) {
            Some(remaining_steps) => {
                self.remaining_steps = remaining_steps;
                true
            }
            None => false,
        }
    }
}

/// The set of operations (by index within their partition) placed so far.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OperationSet {
    words: Vec<u64>,
}

const OPERATIONS_PER_WORD: usize = u64::BITS as usize;

impl OperationSet {
    fn empty(operation_count: usize) -> Self {
        Self {
            words: vec![0; operation_count.div_ceil(OPERATIONS_PER_WORD)],
        }
    }

    fn insert(&mut self, operation: usize) {
        self.words[operation / OPERATIONS_PER_WORD] |= 1 << (operation % OPERATIONS_PER_WORD);
    }

    fn remove(&mut self, operation: usize) {
        self.words[operation / OPERATIONS_PER_WORD] &= !(1 << (operation % OPERATIONS_PER_WORD));
    }

    fn with(&self, operation: usize) -> Self {
        let mut extended = self.clone();
        extended.insert(operation);
        extended
    }
}

/// Calls sort before returns at the same time, so that touching intervals overlap.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Call,
    Return,
}

/// Field order is the sort order: time, then calls first, then position in the partition.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    time: u64,
    kind: EventKind,
    operation: usize,
}

fn events_in_time_order<I, O>(operations: &[&Operation<I, O>]) -> Vec<Event> {
    let mut events = Vec::with_capacity(2 * operations.len());
    for (index, operation) in operations.iter().enumerate() {
        events.push(Event {
            time: operation.call_at,
            kind: EventKind::Call,
            operation: index,
        });
        events.push(Event {
            time: operation.effective_return_at(),
            kind: EventKind::Return,
            operation: index,
        });
    }
    events.sort_unstable();
    events
}

const HEAD_NODE: usize = 0;
const TAIL_NODE: usize = 1;
const FIRST_EVENT_NODE: usize = 2;

struct EventNode {
    /// `None` for the head and tail sentinels, which spare every link update a special case.
    event: Option<Event>,
    previous: usize,
    next: usize,
}

/// The events of operations not yet placed, in time order, as a doubly linked list whose
/// removed nodes keep their links: placing an operation unlinks its two events and undoing the
/// placement relinks them in O(1), which is what makes backtracking cheap ("dancing links").
struct EventList {
    nodes: Vec<EventNode>,
    call_node_of_operation: Vec<usize>,
    return_node_of_operation: Vec<usize>,
}

impl EventList {
    fn new(events_in_time_order: &[Event], operation_count: usize) -> Self {
        let sentinel = |previous, next| EventNode {
            event: None,
            previous,
            next,
        };
        let mut nodes = vec![
            sentinel(HEAD_NODE, TAIL_NODE),
            sentinel(HEAD_NODE, TAIL_NODE),
        ];
        let mut call_node_of_operation = vec![HEAD_NODE; operation_count];
        let mut return_node_of_operation = vec![HEAD_NODE; operation_count];
        for event in events_in_time_order {
            let node = nodes.len();
            match event.kind {
                EventKind::Call => call_node_of_operation[event.operation] = node,
                EventKind::Return => return_node_of_operation[event.operation] = node,
            }
            let previous = nodes[TAIL_NODE].previous;
            nodes.push(EventNode {
                event: Some(*event),
                previous,
                next: TAIL_NODE,
            });
            nodes[previous].next = node;
            nodes[TAIL_NODE].previous = node;
        }
        debug_assert_eq!(nodes.len(), FIRST_EVENT_NODE + events_in_time_order.len());
        Self {
            nodes,
            call_node_of_operation,
            return_node_of_operation,
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes[HEAD_NODE].next == TAIL_NODE
    }

    fn first(&self) -> usize {
        self.nodes[HEAD_NODE].next
    }

    fn next(&self, node: usize) -> usize {
        self.nodes[node].next
    }

    /// The operation whose call `node` is, or `None` for a return or the tail.
    fn operation_called_at(&self, node: usize) -> Option<usize> {
        match self.nodes[node].event {
            Some(Event {
                kind: EventKind::Call,
                operation,
                ..
            }) => Some(operation),
            _ => None,
        }
    }

    fn call_node(&self, operation: usize) -> usize {
        self.call_node_of_operation[operation]
    }

    fn remove_operation(&mut self, operation: usize) {
        self.unlink(self.call_node_of_operation[operation]);
        self.unlink(self.return_node_of_operation[operation]);
    }

    /// Undoes `remove_operation`; relinking must happen in the reverse order of unlinking.
    fn restore_operation(&mut self, operation: usize) {
        self.relink(self.return_node_of_operation[operation]);
        self.relink(self.call_node_of_operation[operation]);
    }

    fn unlink(&mut self, node: usize) {
        let EventNode { previous, next, .. } = self.nodes[node];
        self.nodes[previous].next = next;
        self.nodes[next].previous = previous;
    }

    fn relink(&mut self, node: usize) {
        let EventNode { previous, next, .. } = self.nodes[node];
        self.nodes[previous].next = node;
        self.nodes[next].previous = node;
    }
}

enum SearchOutcome<State> {
    Linearized,
    BudgetExhausted,
    Stuck(LongestPrefix<State>),
}

/// The most operations placed at once during a search that failed, kept to explain the failure.
struct LongestPrefix<State> {
    operations_in_order: Vec<usize>,
    state_after: State,
}

/// One placed operation and what is needed to take it back.
struct Placement<State> {
    operation: usize,
    state_before: State,
}

/// The search over one partition.
struct Search<'a, M: Model> {
    model: &'a M,
    operations: &'a [&'a ModelOperation<M>],
    unplaced_events: EventList,
    placed: OperationSet,
    explored: HashSet<(OperationSet, M::State)>,
    placements: Vec<Placement<M::State>>,
    state: M::State,
    longest_prefix: LongestPrefix<M::State>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, operations: &'a [&'a ModelOperation<M>]) -> Self {
        let state = model.init();
        Self {
            model,
            operations,
            unplaced_events: EventList::new(&events_in_time_order(operations), operations.len()),
            placed: OperationSet::empty(operations.len()),
            explored: HashSet::new(),
            placements: Vec::new(),
            longest_prefix: LongestPrefix {
                operations_in_order: Vec::new(),
                state_after: state.clone(),
            },
            state,
        }
    }

    /// Walks the unplaced events from the earliest. At a call, it tries to place that operation
    /// next and, if it can, starts again from the earliest event. At a return, that operation
    /// should already have been placed, so the latest placement is undone and the walk goes on
    /// after it, trying the alternatives.
    fn run(mut self, budget: &mut SearchBudget) -> SearchOutcome<M::State> {
        let mut node = self.unplaced_events.first();
        while !self.unplaced_events.is_empty() {
            if !budget.take_step() {
                return SearchOutcome::BudgetExhausted;
            }
            node = match self.unplaced_events.operation_called_at(node) {
                Some(operation) => self.place_or_skip(node, operation),
                None => match self.undo_latest_placement() {
                    Some(next_node) => next_node,
                    None => return SearchOutcome::Stuck(self.longest_prefix),
                },
            };
        }
        SearchOutcome::Linearized
    }

    /// Returns the node to look at next.
    fn place_or_skip(&mut self, node: usize, operation: usize) -> usize {
        if self.try_place(operation) {
            self.unplaced_events.first()
        } else {
            self.unplaced_events.next(node)
        }
    }

    /// Places `operation` next if the model accepts it and the search has not already been
    /// where that leads: an explored (placed set, state) pair never led to a linearization, or
    /// the search would have ended there.
    fn try_place(&mut self, operation: usize) -> bool {
        let Some(next_state) = step_operation(self.model, &self.state, self.operations[operation])
        else {
            return false;
        };
        let destination = (self.placed.with(operation), next_state.clone());
        if !self.explored.insert(destination) {
            return false;
        }
        self.placed.insert(operation);
        self.unplaced_events.remove_operation(operation);
        let state_before = std::mem::replace(&mut self.state, next_state);
        self.placements.push(Placement {
            operation,
            state_before,
        });
        self.remember_if_longest();
        true
    }

    /// Returns the node after the undone operation's call, or `None` if nothing was placed.
    fn undo_latest_placement(&mut self) -> Option<usize> {
        let latest = self.placements.pop()?;
        self.placed.remove(latest.operation);
        self.unplaced_events.restore_operation(latest.operation);
        self.state = latest.state_before;
        Some(
            self.unplaced_events
                .next(self.unplaced_events.call_node(latest.operation)),
        )
    }

    fn remember_if_longest(&mut self) {
        if self.placements.len() > self.longest_prefix.operations_in_order.len() {
            self.longest_prefix = LongestPrefix {
                operations_in_order: self
                    .placements
                    .iter()
                    .map(|placement| placement.operation)
                    .collect(),
                state_after: self.state.clone(),
            };
        }
    }
}

/// Turns the longest prefix of a failed search into a [`Violation`].
///
/// Because the search was exhaustive and the prefix is the longest it found, every operation
/// that could have gone next was rejected by the model itself (an already-explored extension
/// would be longer than the longest, so there is none), and at least one operation is outside
/// the prefix (or the search would have succeeded).
fn describe_violation<'history, M: Model>(
    model: &M,
    partition_key: M::PartitionKey,
    operations: &[&'history ModelOperation<M>],
    longest_prefix: LongestPrefix<M::State>,
) -> Violation<'history, M> {
    let mut in_prefix = vec![false; operations.len()];
    for &operation in &longest_prefix.operations_in_order {
        in_prefix[operation] = true;
    }
    let events = events_in_time_order(operations);
    let blocking_return = events
        .iter()
        .position(|event| event.kind == EventKind::Return && !in_prefix[event.operation])
        .expect("a failed search leaves an operation unplaced, and every operation returns");
    let candidates_rejected_by_model: Vec<_> = events[..blocking_return]
        .iter()
        .filter(|event| event.kind == EventKind::Call && !in_prefix[event.operation])
        .map(|event| operations[event.operation])
        .collect();
    debug_assert!(candidates_rejected_by_model.iter().all(|operation| {
        step_operation(model, &longest_prefix.state_after, operation).is_none()
    }));
    Violation {
        partition_key,
        longest_linearizable_prefix: longest_prefix
            .operations_in_order
            .iter()
            .map(|&operation| operations[operation])
            .collect(),
        state_after_prefix: longest_prefix.state_after,
        operation_that_could_not_be_placed: operations[events[blocking_return].operation],
        candidates_rejected_by_model,
    }
}
