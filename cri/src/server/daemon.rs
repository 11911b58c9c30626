//! What every RPC shares: the configuration and the stores, each the single
//! owner of its state.

use std::sync::{Mutex, OnceLock};

use super::events::EventBus;
use super::stats::CpuSampler;
use crate::config::Config;
use crate::image::{ImageStore, Snapshotter, StoreOptions};
use crate::network::{CniManager, CniSettings};
use crate::sandbox::netns::NetnsDir;
use crate::store::{ContainerStore, SandboxStore};
use crate::streaming::StreamingServer;

pub struct Daemon {
    pub config: Config,
    pub images: ImageStore,
    pub cni: CniManager,
    pub netns: NetnsDir,
    pub sandboxes: SandboxStore,
    pub containers: ContainerStore,
    pub snapshots: Snapshotter,
    /// The pod CIDR last given by UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// Container and sandbox lifecycle events (GetContainerEvents).
    pub events: EventBus,
    /// The previous CPU reading of each container and pod, for usage_nano_cores.
    pub cpu_samples: CpuSampler,
    /// The exec/attach/port-forward server, set once it listens.
    pub streaming: OnceLock<StreamingServer>,
}

impl Daemon {
    /// Opens the stores under the configured dirs.
    pub fn open(config: Config) -> anyhow::Result<Daemon> {
        use anyhow::Context;
        let images = ImageStore::open(
            &config.root,
            StoreOptions {
                hosts_dir: config.registry_config_dir.clone(),
                ..StoreOptions::default()
            },
        )
        .with_context(|| format!("opening image store {}", config.root.display()))?;
        let cni = CniManager::new(CniSettings {
            conf_dir: config.cni_conf_dir.clone(),
            bin_dirs: config.cni_bin_dirs.clone(),
            cache_dir: config.cni_cache_dir.clone(),
            ..CniSettings::default()
        });
        let sandboxes = SandboxStore::open(&config.root.join("sandboxes"))?;
        let containers = ContainerStore::open(&config.root.join("containers"))?;
        let snapshots = Snapshotter::new(images.clone()).context("opening snapshotter")?;
        Ok(Daemon {
            netns: NetnsDir::new(&config.netns_dir),
            images,
            cni,
            sandboxes,
            containers,
            snapshots,
            pod_cidr: Mutex::default(),
            events: EventBus::default(),
            cpu_samples: CpuSampler::default(),
            streaming: OnceLock::new(),
            config,
        })
    }

    /// The supervisor dir of sandbox `id` (socket, exit files); runtime
    /// state, gone after a reboot.
    pub fn supervisor_dir(&self, id: &str) -> std::path::PathBuf {
        self.config.state.join("pods").join(id)
    }

    /// The OCI runtime's state root.
    pub fn runtime_root(&self) -> std::path::PathBuf {
        self.config.state.join("runtime")
    }

    /// The berth-cri binary; its siblings berth-runtime and berth-supervisor
    /// ship next to it.
    pub fn own_binary(&self) -> std::path::PathBuf {
        std::env::current_exe().unwrap_or_else(|_| "berth-cri".into())
    }

    /// The per-pod supervisor binary, next to this one.
    pub fn supervisor_binary(&self) -> std::path::PathBuf {
        self.sibling_binary("berth-supervisor")
    }

    /// `berth-runtime`, installed next to this binary: commands in containers run
    /// through it so the forking happens in a single-threaded process.
    pub fn runtime_binary(&self) -> std::path::PathBuf {
        self.sibling_binary("berth-runtime")
    }

    fn sibling_binary(&self, name: &str) -> std::path::PathBuf {
        self.own_binary()
            .parent()
            .map(|dir| dir.join(name))
            .unwrap_or_else(|| name.into())
    }

    /// Where the files of sandbox `id` live.
    pub fn sandbox_dir(&self, id: &str) -> std::path::PathBuf {
        self.config.root.join("sandbox-files").join(id)
    }
}
