//! Pod networking as containerd's CRI plugin does it: the loaded network
//! (reloaded when the conf dir changes), the loopback network first, CNI_ARGS
//! with the pod's identity, rollback of a failed setup, tolerant teardown,
//! and the NetworkReady condition.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_cni::types::CniOutput;
use berth_proto::runtime::v1 as cri;
use serde_json::{Map, Value};

use super::cache::ResultCache;
use super::config::NetworkConfigList;
use super::error::CniError;
use super::exec::PluginExec;
use super::loader::{DirFingerprint, SkippedConfig, fingerprint, scan_conf_dir};
use super::pod_ips::PodIps;
use super::runner::{Attachment, CniRunner};
use super::runtime_config::RuntimeConfig;
use crate::sandbox::netns;

/// Where configurations, plugins and the cache live (containerd's defaults).
#[derive(Debug, Clone)]
pub struct CniSettings {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// libcni's cache dir; results go to `<cache_dir>/results`.
    pub cache_dir: PathBuf,
    /// Deadline for one plugin execution.
    pub plugin_timeout: Duration,
    /// The pod's interface name for the configured network.
    pub ifname: String,
    /// Set up the `cni-loopback` network (interface `lo`) first.
    pub loopback: bool,
}

impl Default for CniSettings {
    fn default() -> Self {
        CniSettings {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            cache_dir: PathBuf::from("/var/lib/cni"),
            plugin_timeout: Duration::from_secs(120),
            ifname: "eth0".into(),
            loopback: true,
        }
    }
}

/// The CRI `NetworkReady` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub ready: bool,
    /// `NetworkPluginNotReady` when not ready, empty otherwise.
    pub reason: String,
    pub message: String,
    /// containerd's `lastCNILoadStatus`: "OK" or "cni config load failed: …".
    pub last_load_status: String,
}

pub const NETWORK_NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// What the last load of the conf dir found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub selected: Option<PathBuf>,
    pub network_name: Option<String>,
    pub skipped: Vec<SkippedConfig>,
    /// Why no network is loaded.
    pub error: Option<String>,
}

/// A pod sandbox as the network code sees it.
#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    pub sandbox_id: String,
    /// The sandbox netns; `None` or a vanished path means it is gone.
    pub netns: Option<PathBuf>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub runtime: RuntimeConfig,
}

impl PodNetwork {
    /// The pod as described by a CRI RunPodSandbox request.
    pub fn from_sandbox_config(
        sandbox_id: &str,
        netns: Option<PathBuf>,
        config: &cri::PodSandboxConfig,
    ) -> Result<Self, CniError> {
        let meta = config.metadata.clone().unwrap_or_default();
        Ok(PodNetwork {
            sandbox_id: sandbox_id.to_string(),
            netns,
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            runtime: RuntimeConfig::from_sandbox_config(config)?,
        })
    }

    /// CNI_ARGS as containerd passes them.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.namespace.as_str()),
            ("K8S_POD_NAME", self.name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", self.sandbox_id.as_str()),
            ("K8S_POD_UID", self.uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The result of setting up a pod's network.
#[derive(Debug, Clone)]
pub struct PodNetworkSetup {
    /// The configured network's result.
    pub result: CniOutput,
    /// The pod IPs for PodSandboxStatus; `None` if the result has no
    /// address on the pod interface.
    pub ips: Option<PodIps>,
}

struct Loaded {
    network: Option<Arc<NetworkConfigList>>,
    report: LoadReport,
    fingerprint: DirFingerprint,
}

/// Owns the loaded network configuration and runs pod network operations.
pub struct CniManager {
    settings: CniSettings,
    runner: CniRunner,
    loopback: NetworkConfigList,
    loaded: Mutex<Loaded>,
}

impl CniManager {
    /// Creates the manager and loads the conf dir once.
    pub fn new(settings: CniSettings) -> Self {
        let runner = CniRunner::new(
            PluginExec::new(settings.bin_dirs.clone(), settings.plugin_timeout),
            ResultCache::new(settings.cache_dir.clone()),
        );
        let manager = CniManager {
            loaded: Mutex::new(load(&settings.conf_dir)),
            settings,
            runner,
            loopback: NetworkConfigList::loopback(),
        };
        manager.log_load();
        manager
    }

    pub fn settings(&self) -> &CniSettings {
        &self.settings
    }

    pub fn runner(&self) -> &CniRunner {
        &self.runner
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // The state is replaced whole, so a poisoned lock still holds a consistent value.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the conf dir again.
    pub fn reload(&self) -> LoadReport {
        let fresh = load(&self.settings.conf_dir);
        let report = fresh.report.clone();
        *self.lock() = fresh;
        self.log_load();
        report
    }

    /// Reloads if files in the conf dir were added, removed or changed
    /// since the last load; returns whether it did.
    pub fn sync(&self) -> bool {
        let current = fingerprint(&self.settings.conf_dir);
        if self.lock().fingerprint == current {
            return false;
        }
        self.reload();
        true
    }

    pub fn load_report(&self) -> LoadReport {
        self.lock().report.clone()
    }

    fn log_load(&self) {
        let report = self.load_report();
        match (&report.selected, &report.error) {
            (Some(path), _) => {
                tracing::info!(file = %path.display(), network = ?report.network_name, "loaded CNI network config")
            }
            (None, Some(error)) => tracing::error!(%error, "cni config load failed"),
            (None, None) => {}
        }
    }

    /// The loaded network (after picking up conf dir changes).
    pub fn network(&self) -> Result<Arc<NetworkConfigList>, CniError> {
        self.sync();
        self.lock().network.clone().ok_or(CniError::NotInitialized)
    }

    /// The NetworkReady condition: a network is loaded and, for 1.1.0
    /// networks, every plugin answers STATUS successfully.
    pub async fn status(&self) -> NetworkStatus {
        let network = self.network();
        let last_load_status = match self.load_report().error {
            Some(e) => format!("cni config load failed: {e}"),
            None => "OK".to_string(),
        };
        let outcome = match network {
            Ok(list) => self.runner.status(&list).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => NetworkStatus {
                ready: true,
                reason: String::new(),
                message: String::new(),
                last_load_status,
            },
            Err(e) => NetworkStatus {
                ready: false,
                reason: NETWORK_NOT_READY_REASON.to_string(),
                message: format!("Network plugin returns error: {e}"),
                last_load_status,
            },
        }
    }

    fn networks<'a>(
        &'a self,
        configured: &'a NetworkConfigList,
    ) -> Vec<(&'a NetworkConfigList, &'a str)> {
        let mut nets = Vec::with_capacity(2);
        if self.settings.loopback {
            nets.push((&self.loopback, "lo"));
        }
        nets.push((configured, self.settings.ifname.as_str()));
        nets
    }

    /// ADD the pod to the loopback and configured networks. On failure,
    /// what was set up is torn down again before the error is returned.
    #[tracing::instrument(skip_all, fields(sandbox = %pod.sandbox_id, pod_uid = %pod.uid))]
    pub async fn setup(&self, pod: &PodNetwork) -> Result<PodNetworkSetup, CniError> {
        let network = self.network()?;
        let netns =
            pod.netns
                .as_deref()
                .map(path_str)
                .ok_or_else(|| CniError::InvalidArgument {
                    field: "netns".into(),
                    reason: format!(
                        "sandbox {} has no network namespace to set up",
                        pod.sandbox_id
                    ),
                })?;
        let call = PodCallArgs::of(pod);
        // The loopback network only touches `lo` inside the pod's netns and
        // shares no state with the configured one: both ADDs run at once.
        // Only the configured network's result is returned, as in sequence.
        let add = |list, ifname| {
            let att = call.attachment(pod, &netns, ifname);
            async move { self.runner.add(list, &att).await }
        };
        let configured = add(&network, self.settings.ifname.as_str());
        let (loopback, configured) = if self.settings.loopback {
            let (loopback, configured) = tokio::join!(add(&self.loopback, "lo"), configured);
            (loopback.map(drop), configured)
        } else {
            (Ok(()), configured.await)
        };
        let result = match loopback.and(configured) {
            Ok(result) => result,
            Err(setup) => {
                return Err(match self.teardown_with(&network, pod).await {
                    Ok(()) => setup,
                    Err(rollback) => CniError::RollbackFailed {
                        setup: Box::new(setup),
                        rollback: Box::new(rollback),
                    },
                });
            }
        };
        let ips = PodIps::from_result(&result, &self.settings.ifname);
        tracing::info!(network = %network.name, ips = ?ips, "pod network set up");
        Ok(PodNetworkSetup { result, ips })
    }

    /// DEL the pod from every network. Works when the netns is gone (the
    /// plugins get an empty CNI_NETNS and still release addresses) and
    /// when it was already torn down.
    #[tracing::instrument(skip_all, fields(sandbox = %pod.sandbox_id, pod_uid = %pod.uid))]
    pub async fn teardown(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let network = self.network()?;
        self.teardown_with(&network, pod).await
    }

    async fn teardown_with(
        &self,
        network: &NetworkConfigList,
        pod: &PodNetwork,
    ) -> Result<(), CniError> {
        let netns = pod
            .netns
            .as_deref()
            .filter(|p| netns::exists(p))
            .map(path_str)
            .unwrap_or_default();
        let call = PodCallArgs::of(pod);
        for (list, ifname) in self.networks(network) {
            let att = call.attachment(pod, &netns, ifname);
            if let Err(e) = self.runner.del(list, &att).await {
                // Like containerd: some plugins report an already deleted
                // attachment, or a missing netns, as an error.
                let text = e.to_string();
                let gone = text.contains("not found")
                    || (netns.is_empty() && text.contains("no such file or directory"));
                if !gone {
                    return Err(e);
                }
                tracing::warn!(sandbox = %pod.sandbox_id, network = %list.name, error = %text, "ignoring DEL error for a gone attachment");
                self.runner
                    .cache()
                    .remove(&list.name, &pod.sandbox_id, ifname)?;
            }
        }
        Ok(())
    }

    /// CHECK the pod's attachment to the configured network.
    #[tracing::instrument(skip_all, fields(sandbox = %pod.sandbox_id, pod_uid = %pod.uid))]
    pub async fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let network = self.network()?;
        let netns = pod.netns.as_deref().map(path_str).unwrap_or_default();
        let call = PodCallArgs::of(pod);
        let att = call.attachment(pod, &netns, &self.settings.ifname);
        self.runner.check(&network, &att).await
    }

    /// Deletes cached attachments of sandboxes not in `live_sandbox_ids`
    /// and sends GC (1.1.0) to the plugins of every network.
    pub async fn gc(&self, live_sandbox_ids: &[String]) -> Result<(), CniError> {
        let network = self.network()?;
        let mut first_error = None;
        for (list, ifname) in self.networks(&network) {
            let valid: Vec<(String, String)> = live_sandbox_ids
                .iter()
                .map(|id| (id.clone(), ifname.to_string()))
                .collect();
            if let Err(e) = self.runner.gc(list, &valid).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn load(conf_dir: &Path) -> Loaded {
    // Fingerprint first: a change racing with the scan triggers another load.
    let fingerprint = fingerprint(conf_dir);
    let scan = scan_conf_dir(conf_dir);
    let dir = conf_dir.display();
    let (network, report) = match scan.selected {
        Some((path, list)) => (
            Some(Arc::new(list.clone())),
            LoadReport {
                selected: Some(path),
                network_name: Some(list.name),
                skipped: scan.skipped,
                error: None,
            },
        ),
        None => {
            let error = if scan.skipped.is_empty() {
                format!(
                    "no network config found in {dir}: {}",
                    CniError::NotInitialized
                )
            } else {
                let reasons: Vec<String> = scan
                    .skipped
                    .iter()
                    .map(|s| format!("{}: {}", s.path.display(), s.reason))
                    .collect();
                format!(
                    "no valid network config found in {dir} ({}): {}",
                    reasons.join("; "),
                    CniError::NotInitialized
                )
            };
            (
                None,
                LoadReport {
                    skipped: scan.skipped,
                    error: Some(error),
                    ..LoadReport::default()
                },
            )
        }
    };
    Loaded {
        network,
        report,
        fingerprint,
    }
}

/// The CNI_ARGS and capability arguments every plugin call for one pod gets.
struct PodCallArgs {
    args: Vec<(String, String)>,
    capability_args: Map<String, Value>,
}

impl PodCallArgs {
    fn of(pod: &PodNetwork) -> Self {
        PodCallArgs {
            args: pod.cni_args(),
            capability_args: pod.runtime.capability_args(),
        }
    }

    fn attachment<'a>(
        &'a self,
        pod: &'a PodNetwork,
        netns: &'a str,
        ifname: &'a str,
    ) -> Attachment<'a> {
        Attachment {
            container_id: &pod.sandbox_id,
            netns,
            ifname,
            args: &self.args,
            capability_args: &self.capability_args,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn operations_can_run_on_a_multi_threaded_runtime() {
        let manager = CniManager::new(CniSettings {
            conf_dir: PathBuf::from("/nonexistent"),
            ..CniSettings::default()
        });
        let pod = PodNetwork::default();
        assert_send(&manager.setup(&pod));
        assert_send(&manager.teardown(&pod));
        assert_send(&manager.check(&pod));
        assert_send(&manager.status());
        assert_send(&manager.gc(&[]));
    }
}
