//! berth-cri configuration: command-line flags over an optional TOML file
//! (`--config`), over built-in defaults. A flag given on the command line
//! wins over the file; the file wins over the default.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// Which cgroup manager the kubelet and the runtime agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Command line of `berth-cri`. Every option may also be set in the config
/// file under the same name with `-` replaced by `_`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "berth-cri",
    version,
    about = "CRI v1 runtime and image service"
)]
pub struct Flags {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket to serve the CRI API on [default: /run/berth/cri.sock].
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Persistent data: images, snapshots, container records [default: /var/lib/berth/cri].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state lost on reboot: sandbox and supervisor sockets [default: /run/berth/cri].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// CNI network configurations [default: /etc/cni/net.d].
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin binaries; may be repeated [default: /opt/cni/bin].
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Vec<PathBuf>,
    /// CNI result cache (libcni's) [default: /var/lib/cni].
    #[arg(long, value_name = "DIR")]
    pub cni_cache_dir: Option<PathBuf>,
    /// Where pod network namespaces are pinned [default: /var/run/netns].
    #[arg(long, value_name = "DIR")]
    pub netns_dir: Option<PathBuf>,
    /// containerd-style registry hosts dir (`<host>/hosts.toml`); also
    /// accepted as --registry-config-path (containerd's `config_path`).
    #[arg(long, value_name = "DIR", alias = "registry-config-path")]
    pub registry_config_dir: Option<PathBuf>,
    /// Cgroup driver reported to the kubelet and used for pod cgroups [default: cgroupfs].
    #[arg(long, value_enum)]
    pub cgroup_driver: Option<CgroupDriver>,
    /// IP the exec/attach/port-forward streaming server listens on [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub stream_address: Option<std::net::IpAddr>,
    /// Port of the streaming server; 0 picks a free one [default: 0].
    #[arg(long, value_name = "PORT")]
    pub stream_port: Option<u16>,
    /// Serve the streaming endpoints over HTTPS (containerd's `enable_tls_streaming`);
    /// without --stream-tls-cert-file/--stream-tls-key-file a self-signed certificate.
    #[arg(long)]
    pub enable_tls_streaming: bool,
    /// PEM certificate chain of the streaming server (with --stream-tls-key-file).
    #[arg(long, value_name = "FILE")]
    pub stream_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the streaming server (with --stream-tls-cert-file).
    #[arg(long, value_name = "FILE")]
    pub stream_tls_key_file: Option<PathBuf>,
    /// Close a streaming connection after this long without traffic, e.g. `4h`,
    /// `30m`, `90s` [default: 4h].
    #[arg(long, value_name = "DURATION")]
    pub stream_idle_timeout: Option<String>,
    /// Log output format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The berth-pause binary [default: berth-pause next to this binary].
    #[arg(long, value_name = "PATH")]
    pub pause_binary: Option<PathBuf>,
    /// Never confine containers with AppArmor, even where the host has it
    /// (containerd's `disable_apparmor`).
    #[arg(long)]
    pub disable_apparmor: bool,
    /// Label containers for SELinux where the host enforces it
    /// (containerd's `enable_selinux`).
    #[arg(long)]
    pub enable_selinux: bool,
    /// Inject CDI devices that containers ask for [default: true].
    #[arg(long, value_name = "BOOL")]
    pub enable_cdi: Option<bool>,
    /// A CDI spec dir; may be repeated, later ones take priority
    /// [default: /etc/cdi and /var/run/cdi].
    #[arg(long, value_name = "DIR")]
    pub cdi_spec_dir: Vec<PathBuf>,
}

/// The config file: the same settings as the flags, all optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<PathBuf>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    cni_conf_dir: Option<PathBuf>,
    #[serde(default)]
    cni_bin_dir: Vec<PathBuf>,
    cni_cache_dir: Option<PathBuf>,
    netns_dir: Option<PathBuf>,
    registry_config_dir: Option<PathBuf>,
    cgroup_driver: Option<CgroupDriver>,
    stream_address: Option<std::net::IpAddr>,
    stream_port: Option<u16>,
    #[serde(default)]
    enable_tls_streaming: bool,
    stream_tls_cert_file: Option<PathBuf>,
    stream_tls_key_file: Option<PathBuf>,
    stream_idle_timeout: Option<String>,
    log_format: Option<LogFormat>,
    pause_binary: Option<PathBuf>,
    #[serde(default)]
    disable_apparmor: bool,
    #[serde(default)]
    enable_selinux: bool,
    enable_cdi: Option<bool>,
    #[serde(default)]
    cdi_spec_dirs: Vec<PathBuf>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub registry_config_dir: Option<PathBuf>,
    pub cgroup_driver: CgroupDriver,
    /// Where the streaming server listens.
    pub stream_address: std::net::SocketAddr,
    /// HTTPS for the streaming server; `None` serves plain HTTP.
    pub stream_tls: Option<crate::streaming::TlsConfig>,
    pub stream_idle_timeout: std::time::Duration,
    pub log_format: LogFormat,
    pub pause_binary: PathBuf,
    pub disable_apparmor: bool,
    pub enable_selinux: bool,
    pub enable_cdi: bool,
    /// Lowest priority first.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Flags over the file they name (if any) over the defaults.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(flags, file)
    }

    fn merge(flags: Flags, file: FileConfig) -> Result<Config, ConfigError> {
        let pick = |flag: Option<PathBuf>, file: Option<PathBuf>, default: &str| {
            flag.or(file).unwrap_or_else(|| PathBuf::from(default))
        };
        let cni_bin_dirs = match (flags.cni_bin_dir.is_empty(), file.cni_bin_dir.is_empty()) {
            (false, _) => flags.cni_bin_dir,
            (true, false) => file.cni_bin_dir,
            (true, true) => vec![PathBuf::from("/opt/cni/bin")],
        };
        let pause_binary = match flags.pause_binary.or(file.pause_binary) {
            Some(path) => path,
            None => default_pause_binary(),
        };
        let config = Config {
            listen: pick(flags.listen, file.listen, "/run/berth/cri.sock"),
            root: pick(flags.root, file.root, "/var/lib/berth/cri"),
            state: pick(flags.state, file.state, "/run/berth/cri"),
            cni_conf_dir: pick(flags.cni_conf_dir, file.cni_conf_dir, "/etc/cni/net.d"),
            cni_bin_dirs,
            cni_cache_dir: pick(flags.cni_cache_dir, file.cni_cache_dir, "/var/lib/cni"),
            netns_dir: pick(flags.netns_dir, file.netns_dir, "/var/run/netns"),
            registry_config_dir: flags.registry_config_dir.or(file.registry_config_dir),
            cgroup_driver: flags
                .cgroup_driver
                .or(file.cgroup_driver)
                .unwrap_or_default(),
            stream_address: std::net::SocketAddr::new(
                flags
                    .stream_address
                    .or(file.stream_address)
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                flags.stream_port.or(file.stream_port).unwrap_or(0),
            ),
            stream_tls: (flags.enable_tls_streaming || file.enable_tls_streaming).then(|| {
                crate::streaming::TlsConfig {
                    cert_file: flags.stream_tls_cert_file.or(file.stream_tls_cert_file),
                    key_file: flags.stream_tls_key_file.or(file.stream_tls_key_file),
                }
            }),
            stream_idle_timeout: match flags.stream_idle_timeout.or(file.stream_idle_timeout) {
                Some(text) => parse_duration(&text).map_err(|reason| ConfigError::Invalid {
                    field: "stream_idle_timeout",
                    reason,
                })?,
                None => DEFAULT_STREAM_IDLE_TIMEOUT,
            },
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            pause_binary,
            disable_apparmor: flags.disable_apparmor || file.disable_apparmor,
            enable_selinux: flags.enable_selinux || file.enable_selinux,
            enable_cdi: flags.enable_cdi.or(file.enable_cdi).unwrap_or(true),
            cdi_spec_dirs: match (flags.cdi_spec_dir.is_empty(), file.cdi_spec_dirs.is_empty()) {
                (false, _) => flags.cdi_spec_dir,
                (true, false) => file.cdi_spec_dirs,
                (true, true) => DEFAULT_CDI_SPEC_DIRS.iter().map(PathBuf::from).collect(),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let absolute = |field: &'static str, path: &Path| {
            if path.is_absolute() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{} is not an absolute path", path.display()),
                })
            }
        };
        absolute("listen", &self.listen)?;
        absolute("root", &self.root)?;
        absolute("state", &self.state)?;
        absolute("cni_conf_dir", &self.cni_conf_dir)?;
        absolute("cni_cache_dir", &self.cni_cache_dir)?;
        absolute("netns_dir", &self.netns_dir)?;
        for dir in &self.cni_bin_dirs {
            absolute("cni_bin_dir", dir)?;
        }
        for dir in &self.cdi_spec_dirs {
            absolute("cdi_spec_dirs", dir)?;
        }
        Ok(())
    }
}

/// containerd's `cdi_spec_dirs` default: static specs, then generated ones.
const DEFAULT_CDI_SPEC_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// containerd's `stream_idle_timeout` default.
const DEFAULT_STREAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// A Go-style duration of whole units: `4h`, `1h30m`, `90s`, `500ms`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("{text:?} is not a duration like 4h, 30m or 90s");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => std::time::Duration::from_secs(3600),
            "m" => std::time::Duration::from_secs(60),
            "s" => std::time::Duration::from_secs(1),
            "ms" => std::time::Duration::from_millis(1),
            _ => return Err(invalid()),
        };
        total += unit * u32::try_from(value).map_err(|_| invalid())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// `berth-pause` installed next to the running binary (both ship together).
fn default_pause_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("berth-pause")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth-pause"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_upstream_paths() {
        let config = Config::merge(Flags::default(), FileConfig::default()).unwrap();
        assert_eq!(config.listen, Path::new("/run/berth/cri.sock"));
        assert_eq!(config.root, Path::new("/var/lib/berth/cri"));
        assert_eq!(config.cni_conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(config.cni_bin_dirs, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(config.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(config.stream_address.to_string(), "127.0.0.1:0");
        assert_eq!(config.stream_tls, None);
        assert_eq!(config.stream_idle_timeout, DEFAULT_STREAM_IDLE_TIMEOUT);
        assert!(config.enable_cdi);
        assert_eq!(
            config.cdi_spec_dirs,
            [PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
        );
        assert!(!config.disable_apparmor && !config.enable_selinux);
    }

    #[test]
    fn lsm_and_cdi_options_come_from_flags_or_the_file() {
        let config = Config::merge(
            Flags::parse_from(["berth-cri", "--enable-cdi", "false", "--disable-apparmor"]),
            file("enable_selinux = true\ncdi_spec_dirs = [\"/opt/cdi\"]"),
        )
        .unwrap();
        assert!(!config.enable_cdi);
        assert!(config.disable_apparmor && config.enable_selinux);
        assert_eq!(config.cdi_spec_dirs, [PathBuf::from("/opt/cdi")]);
        let err = Config::merge(Flags::default(), file("cdi_spec_dirs = [\"cdi\"]")).unwrap_err();
        assert!(err.to_string().contains("cdi_spec_dirs"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let flags = Flags::parse_from(["berth-cri", "--root", "/flag/root"]);
        let config = Config::merge(
            flags,
            file("root = \"/file/root\"\nstate = \"/file/state\"\ncgroup_driver = \"systemd\""),
        )
        .unwrap();
        assert_eq!(config.root, Path::new("/flag/root"));
        assert_eq!(config.state, Path::new("/file/state"));
        assert_eq!(config.cgroup_driver, CgroupDriver::Systemd);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_name_the_field() {
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
        let flags = Flags::parse_from(["berth-cri", "--root", "relative"]);
        let err = Config::merge(flags, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
        let err = Flags::try_parse_from(["berth-cri", "--stream-address", "nonsense"]).unwrap_err();
        assert!(err.to_string().contains("--stream-address"), "{err}");
    }

    #[test]
    fn tls_streaming_and_idle_timeout_come_from_the_file() {
        let config = Config::merge(
            Flags::default(),
            file("enable_tls_streaming = true\nstream_tls_cert_file = \"/c.pem\"\nstream_tls_key_file = \"/k.pem\"\nstream_idle_timeout = \"1h30m\""),
        )
        .unwrap();
        let tls = config.stream_tls.unwrap();
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(config.stream_idle_timeout.as_secs(), 5400);
        let err =
            Config::merge(Flags::default(), file("stream_idle_timeout = \"soon\"")).unwrap_err();
        assert!(err.to_string().contains("stream_idle_timeout"), "{err}");
    }
}
