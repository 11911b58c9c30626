//! Address ranges and range sets: validation, defaults and iteration order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::types::{CniError, CniResult};

/// One range as written in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Range {
    pub subnet: IpNet,
    #[serde(rename = "rangeStart", default)]
    pub range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

impl Range {
    /// Masks the subnet, fills in defaults (gateway = first address, range
    /// = whole subnet minus network and IPv4 broadcast) and checks bounds.
    /// `field` names the range in errors, e.g. `ranges[0][1]`.
    pub fn canonicalize(&mut self, field: &str) -> CniResult<()> {
        self.subnet = self.subnet.trunc();
        let v4 = self.subnet.addr().is_ipv4();
        let host_bits = self.subnet.max_prefix_len() - self.subnet.prefix_len();
        if host_bits < 2 {
            return Err(CniError::invalid_config(format!(
                "field \"{field}.subnet\": {} is too small to allocate from",
                self.subnet
            )));
        }
        let network = to_u128(self.subnet.network());
        let last = to_u128(self.subnet.broadcast());
        let first_usable = network + 1;
        let last_usable = if v4 { last - 1 } else { last };
        let check = |ip: Option<IpAddr>, name: &str| -> CniResult<()> {
            match ip {
                Some(ip) if ip.is_ipv4() != v4 || !self.subnet.contains(&ip) => {
                    Err(CniError::invalid_config(format!(
                        "field \"{field}.{name}\": {ip} is not in subnet {}",
                        self.subnet
                    )))
                }
                _ => Ok(()),
            }
        };
        check(self.range_start, "rangeStart")?;
        check(self.range_end, "rangeEnd")?;
        check(self.gateway, "gateway")?;
        if self.gateway.is_none() {
            self.gateway = Some(from_u128(first_usable, v4));
        }
        let start = self
            .range_start
            .map(to_u128)
            .unwrap_or(first_usable)
            .max(first_usable);
        let end = self
            .range_end
            .map(to_u128)
            .unwrap_or(last_usable)
            .min(last_usable);
        if start > end {
            return Err(CniError::invalid_config(format!(
                "field \"{field}.rangeStart\": range start is after range end"
            )));
        }
        self.range_start = Some(from_u128(start, v4));
        self.range_end = Some(from_u128(end, v4));
        Ok(())
    }

    pub fn start(&self) -> u128 {
        self.range_start.map(to_u128).unwrap_or_default()
    }

    pub fn end(&self) -> u128 {
        self.range_end.map(to_u128).unwrap_or_default()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && (self.start()..=self.end()).contains(&to_u128(ip))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.addr().is_ipv4() == other.subnet.addr().is_ipv4()
            && self.start() <= other.end()
            && other.start() <= self.end()
    }
}

/// A set of ranges of one address family; one address is taken per set.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    pub fn canonicalize(&mut self, field: &str) -> CniResult<()> {
        if self.0.is_empty() {
            return Err(CniError::invalid_config(format!(
                "field \"{field}\": empty range set"
            )));
        }
        let v4 = self.0[0].subnet.addr().is_ipv4();
        for (i, r) in self.0.iter_mut().enumerate() {
            r.canonicalize(&format!("{field}[{i}]"))?;
            if r.subnet.addr().is_ipv4() != v4 {
                return Err(CniError::invalid_config(format!(
                    "field \"{field}[{i}].subnet\": mixes address families in one range set"
                )));
            }
        }
        for (i, a) in self.0.iter().enumerate() {
            if let Some(j) = self.0[i + 1..].iter().position(|b| a.overlaps(b)) {
                return Err(CniError::invalid_config(format!(
                    "field \"{field}[{}]\": overlaps {field}[{i}]",
                    i + 1 + j
                )));
            }
        }
        Ok(())
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn is_v4(&self) -> bool {
        self.0.first().is_some_and(|r| r.subnet.addr().is_ipv4())
    }

    /// Candidate addresses in allocation order: round-robin starting after
    /// `last_reserved` (if it is in this set), wrapping once around all ranges.
    pub fn candidates(
        &self,
        last_reserved: Option<IpAddr>,
    ) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
        let v4 = self.is_v4();
        let (start_range, start_ip) = last_reserved
            .and_then(|ip| {
                self.0
                    .iter()
                    .position(|r| r.contains(ip))
                    .map(|i| (i, to_u128(ip)))
            })
            .map(|(i, ip)| {
                if ip >= self.0[i].end() {
                    ((i + 1) % self.0.len(), None)
                } else {
                    (i, Some(ip + 1))
                }
            })
            .unwrap_or((0, None));
        let n = self.0.len();
        // The starting range is visited twice: from the resume point to its end,
        // and finally from its start up to the resume point.
        (0..=n).flat_map(move |k| {
            let idx = (start_range + k) % n;
            let r = &self.0[idx];
            let (lo, hi) = match (k, start_ip) {
                (0, Some(s)) => (s, r.end()),
                (k, Some(s)) if k == n => (r.start(), s.saturating_sub(1)),
                (k, None) if k == n => (1, 0),
                _ => (r.start(), r.end()),
            };
            (lo..=hi).map(move |v| (from_u128(v, v4), r))
        })
    }
}

impl std::fmt::Display for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| {
                format!(
                    "{}-{}",
                    r.range_start.map(|i| i.to_string()).unwrap_or_default(),
                    r.range_end.map(|i| i.to_string()).unwrap_or_default()
                )
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Range {
        Range {
            subnet: s.parse().unwrap(),
            range_start: None,
            range_end: None,
            gateway: None,
        }
    }

    #[test]
    fn defaults_exclude_network_broadcast() {
        let mut r = range("10.1.2.7/24");
        r.canonicalize("ranges[0][0]").unwrap();
        assert_eq!(r.subnet.to_string(), "10.1.2.0/24");
        assert_eq!(r.range_start.unwrap().to_string(), "10.1.2.1");
        assert_eq!(r.range_end.unwrap().to_string(), "10.1.2.254");
        assert_eq!(r.gateway.unwrap().to_string(), "10.1.2.1");
        let mut r6 = range("fd00::/120");
        r6.canonicalize("x").unwrap();
        assert_eq!(r6.range_end.unwrap().to_string(), "fd00::ff");
    }

    #[test]
    fn rejects_bad_bounds_naming_the_field() {
        let mut r = range("10.1.2.0/24");
        r.range_start = Some("10.1.3.1".parse().unwrap());
        let e = r.canonicalize("ranges[0][0]").unwrap_err();
        assert!(e.msg.contains("ranges[0][0].rangeStart"), "{}", e.msg);
        assert!(range("10.0.0.0/31").canonicalize("r").is_err());
    }

    #[test]
    fn rejects_overlap_in_set() {
        let mut s = RangeSet(vec![range("10.0.0.0/24"), range("10.0.0.128/25")]);
        assert!(
            s.canonicalize("ranges[0]")
                .unwrap_err()
                .msg
                .contains("overlaps")
        );
    }

    #[test]
    fn candidates_resume_after_last_and_wrap() {
        let mut s = RangeSet(vec![range("10.0.0.0/29"), range("10.0.1.0/30")]);
        s.canonicalize("r").unwrap();
        let all: Vec<String> = s
            .candidates(Some("10.0.0.5".parse().unwrap()))
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(
            all,
            [
                "10.0.0.6", "10.0.1.1", "10.0.1.2", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4",
                "10.0.0.5"
            ]
        );
        let fresh: Vec<String> = s.candidates(None).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(fresh.len(), 8);
        assert_eq!(fresh[0], "10.0.0.1");
    }
}
