//! What the apiserver's Service registry does on write: defaulting, ClusterIP and
//! NodePort allocation, immutability of allocated values.

use super::status::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Allocates addresses from one service CIDR (IPv4 or IPv6).
#[derive(Debug)]
struct IpRange {
    base: u128,
    size: u128,
    v6: bool,
    cidr: String,
    used: BTreeSet<u128>,
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl IpRange {
    fn parse(cidr: &str) -> Result<Self, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} lacks a prefix length"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| format!("service CIDR {cidr:?}: {e}"))?;
        let len: u32 = len
            .parse()
            .map_err(|e| format!("service CIDR {cidr:?}: {e}"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        if len >= bits || bits - len > 64 {
            return Err(format!("service CIDR {cidr:?}: unsupported prefix length"));
        }
        let size = 1u128 << (bits - len);
        Ok(IpRange {
            base: to_bits(ip) & !(size - 1),
            size,
            v6: ip.is_ipv6(),
            cidr: cidr.to_string(),
            used: BTreeSet::new(),
        })
    }

    fn family(&self) -> &'static str {
        if self.v6 { "IPv6" } else { "IPv4" }
    }

    fn render(&self, bits: u128) -> String {
        if self.v6 {
            std::net::Ipv6Addr::from(bits).to_string()
        } else {
            std::net::Ipv4Addr::from(bits as u32).to_string()
        }
    }

    fn allocate(&mut self, requested: Option<&str>) -> Result<String, String> {
        if let Some(req) = requested {
            let ip: IpAddr = req.parse().map_err(|_| {
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()
            })?;
            let bits = to_bits(ip);
            // The network address and the broadcast address are never handed out.
            if ip.is_ipv6() != self.v6 || bits <= self.base || bits >= self.base + self.size - 1 {
                return Err(format!(
                    "failed to allocate IP {req}: the provided IP ({req}) is not in the valid range. The range of valid IPs is {}",
                    self.cidr
                ));
            }
            if !self.used.insert(bits) {
                return Err(format!(
                    "failed to allocate IP {req}: provided IP is already allocated"
                ));
            }
            return Ok(req.to_string());
        }
        // Dynamic allocation skips the lower part of the range, which is kept for static choices.
        let reserved = (self.size / 16).clamp(1, 256);
        let candidates = (self.base + reserved..self.base + self.size - 1)
            .chain(self.base + 1..self.base + reserved);
        for bits in candidates {
            if self.used.insert(bits) {
                return Ok(self.render(bits));
            }
        }
        Err("failed to allocate a serviceIP: range is full".to_string())
    }

    fn release(&mut self, ip: &str) {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            self.used.remove(&to_bits(ip));
        }
    }
}

/// ClusterIP and NodePort allocation state for the whole server.
#[derive(Debug)]
pub struct ServiceAllocator {
    ranges: Vec<IpRange>,
    node_port_min: u16,
    node_port_max: u16,
    node_ports: BTreeSet<u16>,
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid("", "Service", name, vec![(field.to_string(), msg)])
}

impl ServiceAllocator {
    /// `cidrs`: one service CIDR per family, primary first (like --service-cluster-ip-range).
    pub fn new(cidrs: &[&str], node_ports: (u16, u16)) -> Result<Self, String> {
        let ranges = cidrs
            .iter()
            .map(|c| IpRange::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceAllocator {
            ranges,
            node_port_min: node_ports.0,
            node_port_max: node_ports.1,
            node_ports: BTreeSet::new(),
        })
    }

    fn allocate_node_port(
        &mut self,
        name: &str,
        field: &str,
        requested: Option<u64>,
    ) -> Result<u16, ApiError> {
        if let Some(p) = requested.filter(|p| *p != 0) {
            let port = u16::try_from(p)
                .ok()
                .filter(|p| (self.node_port_min..=self.node_port_max).contains(p));
            let Some(port) = port else {
                return Err(invalid(
                    name,
                    field,
                    format!(
                        "Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        self.node_port_min, self.node_port_max
                    ),
                ));
            };
            if !self.node_ports.insert(port) {
                return Err(invalid(
                    name,
                    field,
                    format!("Invalid value: {p}: provided port is already allocated"),
                ));
            }
            return Ok(port);
        }
        (self.node_port_min..=self.node_port_max)
            .find(|p| self.node_ports.insert(*p))
            .ok_or_else(|| invalid(name, field, "Internal error: range is full".to_string()))
    }

    /// Defaults a new Service and allocates its ClusterIP(s), NodePorts and health-check port.
    pub fn prepare_create(&mut self, svc: &mut Value) -> Result<(), ApiError> {
        let mut granted = Granted::default();
        let result = self.fill(svc, None, &mut granted);
        if result.is_err() {
            self.undo(&granted);
        }
        result
    }

    /// Keeps allocated values the update omits, allocates what is new, frees what was dropped.
    pub fn prepare_update(&mut self, old: &Value, svc: &mut Value) -> Result<(), ApiError> {
        let mut granted = Granted::default();
        let result = self.fill(svc, Some(old), &mut granted);
        match result {
            Ok(()) => {
                let kept = node_ports_of(svc);
                for p in node_ports_of(old) {
                    if !kept.contains(&p) {
                        self.node_ports.remove(&p);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.undo(&granted);
                Err(e)
            }
        }
    }

    pub fn release(&mut self, svc: &Value) {
        for ip in cluster_ips_of(svc) {
            for r in &mut self.ranges {
                r.release(&ip);
            }
        }
        for p in node_ports_of(svc) {
            self.node_ports.remove(&p);
        }
    }

    fn undo(&mut self, granted: &Granted) {
        for ip in &granted.ips {
            for r in &mut self.ranges {
                r.release(ip);
            }
        }
        for p in &granted.ports {
            self.node_ports.remove(p);
        }
    }

    fn fill(
        &mut self,
        svc: &mut Value,
        old: Option<&Value>,
        granted: &mut Granted,
    ) -> Result<(), ApiError> {
        let name = svc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !svc.get("spec").is_some_and(Value::is_object) {
            svc["spec"] = json!({});
        }
        let spec = &mut svc["spec"];
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
            return Err(invalid(
                &name,
                "spec.type",
                format!(
                    "Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            ));
        }
        spec["type"] = json!(ty);
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if spec["sessionAffinity"] == "ClientIP"
            && spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .is_none()
        {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
        }
        if ty == "ExternalName" {
            if spec
                .get("externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    &name,
                    "spec.externalName",
                    "Required value".to_string(),
                ));
            }
            return Ok(());
        }
        let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
        let Some(ports) = ports.filter(|p| !p.is_empty()) else {
            if spec.get("clusterIP") != Some(&json!("None")) {
                return Err(invalid(&name, "spec.ports", "Required value".to_string()));
            }
            return self.fill_cluster_ips(&name, svc, old, granted);
        };
        for (i, port) in ports.iter_mut().enumerate() {
            let Some(number) = port
                .get("port")
                .and_then(Value::as_u64)
                .filter(|p| (1..=65535).contains(p))
            else {
                return Err(invalid(
                    &name,
                    &format!("spec.ports[{i}].port"),
                    "Invalid value: must be between 1 and 65535, inclusive".to_string(),
                ));
            };
            if port.get("protocol").is_none() {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none() {
                port["targetPort"] = json!(number);
            }
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let old_ports = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, port) in ports.iter_mut().enumerate() {
                let requested = port.get("nodePort").and_then(Value::as_u64);
                let previous = old_ports
                    .iter()
                    .find(|o| {
                        o.get("port") == port.get("port")
                            && o.get("protocol") == port.get("protocol")
                    })
                    .and_then(|o| o.get("nodePort"))
                    .and_then(Value::as_u64);
                match (requested, previous) {
                    (None, Some(prev)) => port["nodePort"] = json!(prev),
                    (Some(r), Some(prev)) if r == prev => {}
                    _ => {
                        let p = self.allocate_node_port(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            requested,
                        )?;
                        granted.ports.push(p);
                        port["nodePort"] = json!(p);
                    }
                }
            }
            if spec.get("externalTrafficPolicy").is_none() {
                spec["externalTrafficPolicy"] = json!("Cluster");
            }
            if ty == "LoadBalancer"
                && spec["externalTrafficPolicy"] == "Local"
                && spec.get("healthCheckNodePort").is_none()
            {
                let previous = old
                    .and_then(|o| o.pointer("/spec/healthCheckNodePort"))
                    .and_then(Value::as_u64);
                let port = match previous {
                    Some(p) => p as u16,
                    None => {
                        let p = self.allocate_node_port(&name, "spec.healthCheckNodePort", None)?;
                        granted.ports.push(p);
                        p
                    }
                };
                spec["healthCheckNodePort"] = json!(port);
            }
        }
        if spec.get("internalTrafficPolicy").is_none() {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        self.fill_cluster_ips(&name, svc, old, granted)
    }

    fn fill_cluster_ips(
        &mut self,
        name: &str,
        svc: &mut Value,
        old: Option<&Value>,
        granted: &mut Granted,
    ) -> Result<(), ApiError> {
        let spec = &mut svc["spec"];
        let old_ips = old.map(cluster_ips_of).unwrap_or_default();
        let mut requested: Vec<String> = match spec.get("clusterIPs").and_then(Value::as_array) {
            Some(ips) => ips
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            None => spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| vec![s.to_string()])
                .unwrap_or_default(),
        };
        if old.is_some() {
            if requested.is_empty() {
                requested = old_ips.clone();
            } else if requested.first() != old_ips.first() && !old_ips.is_empty() {
                return Err(invalid(
                    name,
                    "spec.clusterIPs[0]",
                    format!("Invalid value: {:?}: may not change once set", requested[0]),
                ));
            }
            if requested == old_ips {
                if !requested.is_empty() {
                    spec["clusterIP"] = json!(requested[0]);
                    spec["clusterIPs"] = json!(requested);
                }
                return Ok(());
            }
        }
        let policy = spec
            .get("ipFamilyPolicy")
            .and_then(Value::as_str)
            .unwrap_or("SingleStack")
            .to_string();
        let want_families = if policy == "SingleStack" {
            1
        } else {
            self.ranges.len()
        };
        if policy == "RequireDualStack" && self.ranges.len() < 2 {
            return Err(invalid(name, "spec.ipFamilyPolicy", "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".to_string()));
        }
        if requested.first().map(String::as_str) == Some("None") {
            spec["clusterIP"] = json!("None");
            spec["clusterIPs"] = json!(["None"]);
            spec["ipFamilyPolicy"] = json!(policy);
            let families: Vec<&str> = self
                .ranges
                .iter()
                .take(want_families)
                .map(IpRange::family)
                .collect();
            spec["ipFamilies"] = json!(families);
            return Ok(());
        }
        let mut ips = Vec::new();
        let mut families = Vec::new();
        for (i, range) in self.ranges.iter_mut().take(want_families).enumerate() {
            let req = requested
                .iter()
                .find(|ip| ip.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6() == range.v6))
                .map(String::as_str);
            if req.is_some_and(|r| old_ips.iter().any(|o| o == r)) {
                ips.push(req.unwrap_or_default().to_string());
            } else {
                let ip = range.allocate(req).map_err(|m| {
                    invalid(
                        name,
                        &format!("spec.clusterIPs[{i}]"),
                        format!("Invalid value: {requested:?}: {m}"),
                    )
                })?;
                granted.ips.push(ip.clone());
                ips.push(ip);
            }
            families.push(range.family());
        }
        spec["clusterIP"] = json!(ips[0]);
        spec["clusterIPs"] = json!(ips);
        spec["ipFamilies"] = json!(families);
        spec["ipFamilyPolicy"] = json!(policy);
        Ok(())
    }
}

#[derive(Default)]
struct Granted {
    ips: Vec<String>,
    ports: Vec<u16>,
}

fn cluster_ips_of(svc: &Value) -> Vec<String> {
    svc.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|s| *s != "None")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn node_ports_of(svc: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("nodePort")?.as_u64())
                .map(|p| p as u16)
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
    {
        ports.push(h as u16);
    }
    ports
}
