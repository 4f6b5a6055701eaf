//! Flavors: the hardware shape and hourly price of one node.

use crate::resources::Resources;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    /// e.g. `gpu-8x-a100`; a name rule like pool names.
    pub name: String,
    /// What a node of this flavor offers.
    pub capacity: Resources,
    /// `nvidia-a100`, `ascend-910b`, ...; `None` for CPU-only flavors.
    pub accelerator_type: Option<String>,
    /// `x86_64` or `aarch64`; a pool's flavors share one architecture.
    pub cpu_architecture: String,
    /// Price of one whole node for one hour, in micro-units of the currency.
    pub price_micros_per_hour: u64,
}

pub const CPU_ARCHITECTURES: [&str; 2] = ["x86_64", "aarch64"];
