//! Placement classes: for a job shape (what `static_fit` and `prefers_not` read of a
//! job spec), the node groups it may use, preferred groups first. Jobs whose shapes
//! admit the same groups share a class, and so share failure memos (`failure_memo`).

use crate::pool_nodes::{GroupId, PoolNodes};
use corral_model::fit::{prefers_not, static_fit};
use corral_model::{JobSpec, Toleration};
use std::collections::BTreeMap;

pub(crate) type ClassId = u32;

/// The node groups one class of jobs may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlacementClass {
    /// Groups that pass static fit and carry no untolerated PreferNoSchedule taint.
    pub preferred: Vec<GroupId>,
    /// `preferred`, then the groups the job would rather avoid.
    pub all: Vec<GroupId>,
}

impl PlacementClass {
    /// Whether some group is only a fallback (PreferNoSchedule).
    pub(crate) fn has_fallback(&self) -> bool {
        self.all.len() > self.preferred.len()
    }
}

/// The part of a job spec that the static checks read, borrowed from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ShapeKey<'a> {
    uses_accelerators: bool,
    accelerator_type: Option<&'a str>,
    node_selector: &'a BTreeMap<String, String>,
    tolerations: &'a [Toleration],
}

impl<'a> ShapeKey<'a> {
    fn of(spec: &'a JobSpec) -> ShapeKey<'a> {
        ShapeKey {
            uses_accelerators: spec.per_replica.accelerators > 0,
            accelerator_type: spec.accelerator_type.as_deref(),
            node_selector: &spec.node_selector,
            tolerations: &spec.tolerations,
        }
    }
}

#[derive(Default)]
pub(crate) struct PlacementClasses<'a> {
    class_by_shape: BTreeMap<ShapeKey<'a>, ClassId>,
    class_by_groups: BTreeMap<(Vec<GroupId>, Vec<GroupId>), ClassId>,
    classes: Vec<PlacementClass>,
}

impl<'a> PlacementClasses<'a> {
    /// The class of `spec`, evaluating static fit on each group the first time a shape
    /// is seen.
    pub(crate) fn class_for(&mut self, spec: &'a JobSpec, nodes: &PoolNodes) -> ClassId {
        let shape = ShapeKey::of(spec);
        if let Some(class) = self.class_by_shape.get(&shape) {
            return *class;
        }
        let class = self.class_for_groups(eligible_groups(spec, nodes));
        self.class_by_shape.insert(shape, class);
        class
    }

    pub(crate) fn class(&self, class: ClassId) -> &PlacementClass {
        &self.classes[class as usize]
    }

    fn class_for_groups(&mut self, (preferred, fallback): (Vec<GroupId>, Vec<GroupId>)) -> ClassId {
        let key = (preferred, fallback);
        if let Some(class) = self.class_by_groups.get(&key) {
            return *class;
        }
        let (preferred, fallback) = key.clone();
        let mut all = preferred.clone();
        all.extend(fallback);
        self.classes.push(PlacementClass { preferred, all });
        let class = (self.classes.len() - 1) as ClassId;
        self.class_by_groups.insert(key, class);
        class
    }
}

/// Groups passing static fit for `spec`: (preferred, only-if-needed).
fn eligible_groups(spec: &JobSpec, nodes: &PoolNodes) -> (Vec<GroupId>, Vec<GroupId>) {
    let mut preferred = Vec::new();
    let mut fallback = Vec::new();
    for (group, node_group) in nodes.groups().iter().enumerate() {
        let node = node_group.representative;
        if static_fit(node, spec).is_err() {
            continue;
        }
        if prefers_not(node, spec) {
            fallback.push(group as GroupId);
        } else {
            preferred.push(group as GroupId);
        }
    }
    (preferred, fallback)
}
