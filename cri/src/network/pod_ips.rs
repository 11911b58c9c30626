//! Which of a CNI result's addresses CRI reports for a pod.

use std::net::IpAddr;

use berth_cni::types::CniOutput;

/// The addresses CRI reports for a pod: the primary one and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIps {
    pub ip: IpAddr,
    pub additional: Vec<IpAddr>,
}

impl PodIps {
    /// Pod IPs as containerd picks them: the addresses of the interface
    /// named `ifname` (eth0), the first IPv4 one primary, the rest in order.
    pub fn from_result(result: &CniOutput, ifname: &str) -> Option<PodIps> {
        let mut ips: Vec<IpAddr> = result
            .ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| result.interfaces.get(i))
                    .is_some_and(|iface| iface.name == ifname)
            })
            .map(|ip| ip.address.addr())
            .collect();
        if ips.is_empty() {
            return None;
        }
        let primary = ips.iter().position(IpAddr::is_ipv4).unwrap_or(0);
        let ip = ips.remove(primary);
        Some(PodIps {
            ip,
            additional: ips,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_eth0_ipv4_first() {
        let result = CniOutput::from_value(serde_json::json!({"cniVersion":"0.3.1",
            "interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/var/run/netns/x"}],
            "ips":[{"version":"6","address":"fd00::5/64","interface":1},
                   {"version":"4","address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1},
                   {"version":"4","address":"10.9.0.1/16","interface":0}]}))
        .unwrap();
        let ips = PodIps::from_result(&result, "eth0").unwrap();
        assert_eq!(ips.ip.to_string(), "10.1.0.5");
        assert_eq!(ips.additional, vec!["fd00::5".parse::<IpAddr>().unwrap()]);
        assert!(PodIps::from_result(&result, "eth1").is_none());
    }
}
