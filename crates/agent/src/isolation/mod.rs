//! How a node keeps its replicas apart from each other and from the agent
//! (`isolation = "full"`, the default): each tenant's replicas run under that tenant's
//! own unprivileged uid ([`users`]), with no supplementary groups, `no_new_privs`, umask
//! 077 and a clean environment, in a work directory only that uid can enter, inside a
//! cgroup of their own that enforces their CPU, memory and pids limits and the devices
//! they may open ([`cgroups`]). It needs root and a cgroup hierarchy; an agent that has
//! neither refuses to start unless its configuration says `isolation = "none"`, which
//! runs replicas as the agent's own user without limits (development only) and is
//! logged loudly and shown by `corral node get`.

pub(crate) mod cgroups;
mod users;

use crate::config::{AgentConfig, IsolationMode};
use crate::replica::LaunchSpec;
use cgroups::{CgroupLimits, Hierarchy};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use users::TenantUsers;

/// The isolation a machine gives its replicas.
#[derive(Clone, Debug)]
pub(crate) enum Sandbox {
    /// Replicas run as the agent's user, unlimited.
    None,
    Full(Arc<FullIsolation>),
}

/// What full isolation needs: the tenants' uids, the cgroup hierarchy, the limits
/// configured for every replica and the accelerators' device rules.
#[derive(Debug)]
pub(crate) struct FullIsolation {
    users: TenantUsers,
    hierarchy: Hierarchy,
    pids_max: u32,
    /// The device rule (`c 195:0 rwm`) of each accelerator, by index.
    accelerator_devices: Vec<String>,
}

/// How one replica is to be confined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Confinement {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) limits: CgroupLimits,
}

impl Sandbox {
    /// The isolation `config` asks for, checked against the machine: full isolation
    /// needs root and a usable cgroup hierarchy, and says which one is missing.
    pub(crate) fn prepare(config: &AgentConfig) -> Result<Sandbox, String> {
        if config.isolation == IsolationMode::None {
            tracing::warn!(
                "REPLICA ISOLATION IS OFF (isolation = \"none\"): replicas run as the agent's \
                 own user with no cgroup limits and can read each other's files and the \
                 agent's credential; never run tenants' work like this"
            );
            return Ok(Sandbox::None);
        }
        let hierarchy = usable_hierarchy()?;
        cgroups::prepare(&hierarchy)
            .map_err(|error| format!("preparing the {} hierarchy: {error}", hierarchy.version()))?;
        let users = TenantUsers::load(
            &config.work_dir,
            config.tenant_uid_range[0]..=config.tenant_uid_range[1],
        )
        .map_err(|error| format!("loading the tenant users: {error}"))?;
        let mut accelerator_devices = Vec::with_capacity(config.accelerator_devices.len());
        for path in &config.accelerator_devices {
            accelerator_devices
                .push(device_rule(path).map_err(|error| {
                    format!("accelerator_devices: {}: {error}", path.display())
                })?);
        }
        if !hierarchy.limits_devices() && !accelerator_devices.is_empty() {
            tracing::warn!(
                "{}: accelerator devices are not confined per replica (only the v1 devices \
                 controller is supported); every replica can open every accelerator",
                hierarchy.version()
            );
        }
        tracing::info!(
            "replicas run under tenant users in {} cgroups",
            hierarchy.version()
        );
        Ok(Sandbox::Full(Arc::new(FullIsolation {
            users,
            hierarchy,
            pids_max: config.replica_pids_max,
            accelerator_devices,
        })))
    }

    /// What `corral node get` shows: "none", or "users+cgroup v1" / "users+cgroup v2".
    pub(crate) fn describe(&self) -> String {
        match self {
            Sandbox::None => "none".to_string(),
            Sandbox::Full(full) => format!("users+{}", full.hierarchy.version()),
        }
    }
}

/// The cgroup hierarchy to confine replicas in, or why there is none usable (the agent
/// is not root, or no hierarchy has the controllers).
fn usable_hierarchy() -> Result<Hierarchy, String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "the agent runs as uid {euid}, not root, so it cannot run replicas under \
             tenant users in cgroups of their own; run it as root, or set \
             isolation = \"none\" (development only: no isolation at all)"
        ));
    }
    cgroups::detect()
        .map_err(|error| format!("reading the cgroup mounts: {error}"))?
        .ok_or_else(|| {
            "no usable cgroup hierarchy: cgroup v1 needs the cpu, memory, pids and devices \
             controllers mounted, v2 the cpu, memory and pids controllers; or set \
             isolation = \"none\" (development only)"
                .to_string()
        })
}

/// Why full isolation is not possible here, or None when it is.
pub(crate) fn unavailable() -> Option<String> {
    usable_hierarchy().err()
}

impl FullIsolation {
    pub(crate) fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// How `spec`'s replica is confined: its tenant's uid (given now if new), its
    /// requested CPU and memory, the configured pids limit, its own accelerators.
    pub(crate) fn confinement(&self, spec: &LaunchSpec) -> io::Result<Confinement> {
        let uid = self.users.uid_of(spec.tenant)?;
        let mut devices = Vec::with_capacity(spec.device_indices.len());
        for index in &spec.device_indices {
            // A node configured with fewer device files than accelerators has nothing
            // to allow for the others (and nothing a replica could open by that index).
            if let Some(rule) = self.accelerator_devices.get(*index as usize) {
                devices.push(rule.clone());
            }
        }
        Ok(Confinement {
            uid,
            gid: uid,
            limits: CgroupLimits {
                cpu_millicores: spec.cpu_millicores,
                memory_mib: spec.memory_mib,
                pids_max: self.pids_max,
                devices,
            },
        })
    }
}

/// The devices-controller rule allowing the device file at `path`.
fn device_rule(path: &std::path::Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)?;
    let kind = if metadata.file_type().is_char_device() {
        'c'
    } else if metadata.file_type().is_block_device() {
        'b'
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a device file",
        ));
    };
    let device = metadata.rdev();
    Ok(format!(
        "{kind} {}:{} rwm",
        libc::major(device),
        libc::minor(device)
    ))
}
