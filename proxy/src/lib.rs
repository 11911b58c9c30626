//! berth-proxy Service proxy (iptables, nftables, IPVS).
