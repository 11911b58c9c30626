//! The files a pod's containers get at /etc/hostname, /etc/hosts and
//! /etc/resolv.conf, made once per sandbox as containerd makes them.

use std::fs;
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;

/// The paths of a sandbox's generated files.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

impl SandboxFiles {
    pub fn in_dir(dir: &Path) -> Self {
        SandboxFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
        }
    }

    /// Writes all three into their (existing) directory. `hostname` is the
    /// pod's hostname (the node's with host networking).
    pub fn write(
        &self,
        hostname: &str,
        dns: Option<&cri::DnsConfig>,
        host_network: bool,
    ) -> std::io::Result<()> {
        fs::write(&self.hostname, format!("{hostname}\n"))?;
        if host_network {
            copy_or_empty(Path::new("/etc/hosts"), &self.hosts)?;
        } else {
            fs::write(&self.hosts, DEFAULT_HOSTS)?;
        }
        match dns
            .filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
        {
            Some(dns) if !host_network => fs::write(&self.resolv_conf, resolv_conf(dns)),
            _ => copy_or_empty(Path::new("/etc/resolv.conf"), &self.resolv_conf),
        }
    }
}

/// What a pod sees in /etc/hosts until the kubelet mounts its own.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// resolv.conf from the kubelet's DNSConfig, in containerd's line order.
pub fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

fn copy_or_empty(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::copy(from, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::write(to, ""),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_search_servers_options() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
        );
    }

    #[test]
    fn files_are_written_for_a_pod_network() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::in_dir(dir.path());
        let dns = cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            ..Default::default()
        };
        files.write("web-0", Some(&dns), false).unwrap();
        assert_eq!(fs::read_to_string(&files.hostname).unwrap(), "web-0\n");
        assert!(
            fs::read_to_string(&files.hosts)
                .unwrap()
                .starts_with("127.0.0.1\tlocalhost")
        );
        assert_eq!(
            fs::read_to_string(&files.resolv_conf).unwrap(),
            "nameserver 10.0.0.10\n"
        );
    }
}
