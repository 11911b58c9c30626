//! Plugin skeleton: reads the CNI environment and stdin, dispatches to a
//! [`Plugin`], and writes the result or error object as the spec requires.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::types::version::{self, CURRENT_VERSION, SUPPORTED_VERSIONS, Version};
use crate::types::{CniError, CniOutput, CniResult, ErrorCode, NetConf, parse_config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> CniResult<Self> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_COMMAND {other:?} is not a CNI command"),
                ));
            }
        })
    }
}

/// Everything a plugin invocation receives.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime gave none (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as key/value pairs.
    pub args: BTreeMap<String, String>,
    pub path: Vec<PathBuf>,
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: Version,
}

impl CmdArgs {
    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }
}

/// What each plugin implements. GC and STATUS default to "nothing to do".
pub trait Plugin {
    fn add(&self, args: &CmdArgs) -> CniResult<CniOutput>;
    fn del(&self, args: &CmdArgs) -> CniResult<()>;
    fn check(&self, args: &CmdArgs) -> CniResult<()>;
    fn gc(&self, _args: &CmdArgs) -> CniResult<()> {
        Ok(())
    }
    fn status(&self, _args: &CmdArgs) -> CniResult<()> {
        Ok(())
    }
    /// The CNI_ARGS keys the plugin understands. A plugin that reads CNI_ARGS
    /// rejects any other key unless `IgnoreUnknown` is true, as the reference
    /// plugins do; `None` means the plugin never looks at CNI_ARGS.
    fn known_cni_args(&self) -> Option<&'static [&'static str]> {
        None
    }
}

/// Source of the environment, so dispatch can be unit-tested without a process.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// Runs the plugin for this process and exits with the spec's status.
pub fn run_main(plugin: &dyn Plugin) -> ! {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = match read {
        Ok(_) => dispatch(plugin, &ProcessEnv, stdin),
        Err(e) => (
            CniError::io("cannot read stdin", e).to_json(CURRENT_VERSION),
            1,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    // Nothing sensible is left to do if stdout is gone; the exit code still tells.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    std::process::exit(code)
}

/// Executes one invocation and returns (stdout text, exit status).
pub fn dispatch(plugin: &dyn Plugin, env: &dyn Env, stdin: Vec<u8>) -> (String, i32) {
    let version_hint = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    match dispatch_inner(plugin, env, stdin) {
        Ok(Some(out)) => (out, 0),
        Ok(None) => (String::new(), 0),
        Err(e) => (e.to_json(&version_hint), 1),
    }
}

fn dispatch_inner(plugin: &dyn Plugin, env: &dyn Env, stdin: Vec<u8>) -> CniResult<Option<String>> {
    let command = Command::parse(&required(env, "CNI_COMMAND")?)?;
    if command == Command::Version {
        return Ok(Some(version_output(&stdin)));
    }
    let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let container_id = if needs_container {
        required(env, "CNI_CONTAINERID")?
    } else {
        String::new()
    };
    let ifname = if needs_container {
        required(env, "CNI_IFNAME")?
    } else {
        String::new()
    };
    let netns = match command {
        Command::Add | Command::Check => required(env, "CNI_NETNS")?,
        _ => env.var("CNI_NETNS").unwrap_or_default(),
    };
    let path: Vec<PathBuf> = env
        .var("CNI_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let conf: NetConf = parse_config(&stdin)?;
    let version = version::check_supported(&conf.cni_version)?;
    crate::types::validate_name(&conf.name)?;
    if needs_container {
        validate_ifname(&ifname)?;
    }
    // Plugins that do not read CNI_ARGS never fail on them, however malformed.
    let args = match plugin.known_cni_args() {
        Some(known) if needs_container => {
            let raw = env.var("CNI_ARGS").unwrap_or_default();
            reject_unknown_cni_args(&raw, known)?;
            parse_cni_args(&raw)?
        }
        _ => BTreeMap::new(),
    };
    let unsupported = |what: &str| {
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("{what} is not supported by cniVersion {}", conf.cni_version),
        )
    };
    match command {
        Command::Check if !version.supports_check() => return Err(unsupported("CHECK")),
        Command::Gc | Command::Status if !version.supports_gc_and_status() => {
            return Err(unsupported(if command == Command::Gc {
                "GC"
            } else {
                "STATUS"
            }));
        }
        _ => {}
    }
    let cni_version = conf.cni_version.clone();
    let cmd = CmdArgs {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
        stdin,
        conf,
        version,
    };
    match command {
        Command::Add => {
            let out = plugin.add(&cmd)?;
            Ok(Some(out.to_version(&cni_version)?.to_string()))
        }
        Command::Del => plugin.del(&cmd).map(|_| None),
        Command::Check => plugin.check(&cmd).map(|_| None),
        Command::Gc => plugin.gc(&cmd).map(|_| None),
        Command::Status => plugin.status(&cmd).map(|_| None),
        // Answered before the config was parsed; kept total for the compiler.
        Command::Version => Ok(Some(version_output(&cmd.stdin))),
    }
}

fn required(env: &dyn Env, key: &str) -> CniResult<String> {
    env.var(key).filter(|v| !v.is_empty()).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("required environment variable {key} is not set"),
        )
    })
}

/// Interface names the kernel accepts: 1..15 bytes, no '/', ':' or whitespace, not "." or "..".
fn validate_ifname(name: &str) -> CniResult<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME {name:?} is not a valid interface name"),
        ))
    }
}

/// The pairs of `K1=V1;K2=V2` as sent in CNI_ARGS, in order. Like the
/// reference plugins, every pair needs exactly one '=' (so "A=1;" fails on
/// its empty last pair).
fn cni_arg_pairs(raw: &str) -> CniResult<Vec<(&str, &str)>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !value.contains('=') => Ok((key, value)),
            _ => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("ARGS: invalid pair {pair:?}"),
            )),
        })
        .collect()
}

/// CNI_ARGS as a map (the last of repeated keys wins).
pub fn parse_cni_args(raw: &str) -> CniResult<BTreeMap<String, String>> {
    Ok(cni_arg_pairs(raw)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Fails naming the pairs whose keys are neither `IgnoreUnknown` nor in
/// `known`, unless `IgnoreUnknown` is true ("1"/"true", any case).
pub fn reject_unknown_cni_args(raw: &str, known: &[&str]) -> CniResult<()> {
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    for (key, value) in cni_arg_pairs(raw)? {
        let pair = format!("{key}={value}");
        if key == "IgnoreUnknown" {
            ignore_unknown = parse_arg_bool(value).ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "ARGS: error parsing value of pair {pair:?}: boolean unmarshal error: invalid input {value}"
                    ),
                )
            })?;
        } else if !known.contains(&key) {
            unknown.push(format!("{pair:?}"));
        }
    }
    if unknown.is_empty() || ignore_unknown {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::InvalidEnvironment,
        format!("ARGS: unknown args [{}]", unknown.join(" ")),
    ))
}

/// Booleans in CNI_ARGS: "1"/"true" and "0"/"false", case-insensitive.
fn parse_arg_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn version_output(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    serde_json::json!({ "cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
    }

    struct Fixed;
    impl Plugin for Fixed {
        fn add(&self, _: &CmdArgs) -> CniResult<CniOutput> {
            Ok(CniOutput {
                ips: vec![crate::types::IpConfig {
                    version: None,
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &CmdArgs) -> CniResult<()> {
            Ok(())
        }
        fn check(&self, _: &CmdArgs) -> CniResult<()> {
            Ok(())
        }
    }

    fn env(cmd: &'static str) -> MapEnv {
        MapEnv(HashMap::from([
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]))
    }

    #[test]
    fn add_result_is_in_config_version() {
        let (out, code) = dispatch(
            &Fixed,
            &env("ADD"),
            br#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#.to_vec(),
        );
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn errors_carry_spec_codes() {
        let (out, code) = dispatch(
            &Fixed,
            &env("ADD"),
            br#"{"cniVersion":"7.0.0","name":"n","type":"t"}"#.to_vec(),
        );
        assert_eq!(code, 1);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["code"],
            1
        );
        let (out, _) = dispatch(
            &Fixed,
            &MapEnv(HashMap::from([("CNI_COMMAND", "ADD")])),
            b"{}".to_vec(),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["code"], 4);
        assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        let (out, _) = dispatch(
            &Fixed,
            &env("CHECK"),
            br#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#.to_vec(),
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["code"],
            1
        );
        let (out, _) = dispatch(
            &Fixed,
            &env("GC"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#.to_vec(),
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["code"],
            1
        );
    }

    #[test]
    fn cni_args_are_not_parsed_for_plugins_that_ignore_them() {
        let mut e = env("ADD");
        e.0.insert("CNI_ARGS", "novalue;FOO=bar");
        let (out, code) = dispatch(
            &Fixed,
            &e,
            br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#.to_vec(),
        );
        assert_eq!(code, 0, "{out}");
    }

    #[test]
    fn version_lists_supported() {
        let (out, code) = dispatch(
            &Fixed,
            &MapEnv(HashMap::from([("CNI_COMMAND", "VERSION")])),
            Vec::new(),
        );
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            SUPPORTED_VERSIONS.len()
        );
    }

    #[test]
    fn parses_cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;IP=10.0.0.9;K8S_POD_NAME=p").unwrap();
        assert_eq!(a["IP"], "10.0.0.9");
        for bad in ["novalue", "A=1;", "A=b=c"] {
            let err = parse_cni_args(bad).unwrap_err();
            assert!(
                err.msg.starts_with("ARGS: invalid pair"),
                "{bad}: {}",
                err.msg
            );
        }
        assert!(parse_cni_args("").unwrap().is_empty());
    }

    #[test]
    fn unknown_cni_args_are_rejected_unless_ignored() {
        let err =
            reject_unknown_cni_args("FOO=bar;IP=10.0.0.9;K8S_POD_NAME=p", &["IP"]).unwrap_err();
        assert_eq!(
            err.msg,
            r#"ARGS: unknown args ["FOO=bar" "K8S_POD_NAME=p"]"#
        );
        reject_unknown_cni_args("IgnoreUnknown=1;FOO=bar", &["IP"]).unwrap();
        reject_unknown_cni_args("FOO=bar;IgnoreUnknown=TRUE", &["IP"]).unwrap();
        reject_unknown_cni_args("IP=10.0.0.9", &["IP"]).unwrap();
        assert!(reject_unknown_cni_args("IgnoreUnknown=0;FOO=bar", &[]).is_err());
        let err = reject_unknown_cni_args("IgnoreUnknown=yes", &[]).unwrap_err();
        assert!(err.msg.contains("IgnoreUnknown=yes"), "{}", err.msg);
    }
}
