//! What every RPC shares: the configuration and the stores, each the single
//! owner of its state.

use std::sync::Mutex;

use crate::config::Config;
use crate::image::{ImageStore, StoreOptions};
use crate::network::{CniManager, CniSettings};
use crate::sandbox::netns::NetnsDir;
use crate::store::SandboxStore;

pub struct Daemon {
    pub config: Config,
    pub images: ImageStore,
    pub cni: CniManager,
    pub netns: NetnsDir,
    pub sandboxes: SandboxStore,
    /// The pod CIDR last given by UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
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
        Ok(Daemon {
            netns: NetnsDir::new(&config.netns_dir),
            images,
            cni,
            sandboxes,
            pod_cidr: Mutex::default(),
            config,
        })
    }

    /// Where the files of sandbox `id` live.
    pub fn sandbox_dir(&self, id: &str) -> std::path::PathBuf {
        self.config.root.join("sandbox-files").join(id)
    }
}
