//! The fixed part of the table: the shared sets and maps, base chains hooked into
//! netfilter, masquerading, dispatch through the verdict maps, and the no-endpoint
//! checks. Priorities are numeric (-100 is dstnat, 100 srcnat), as upstream's.

use super::expr::{self, Cmp, Concat, Expr, Verdict};
use super::netlink::Batch;
use super::ops::{self, Hook};
use super::ruleset::SharedSet;
use crate::net::Cidr;

/// Which destinations NodePorts answer on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortMatch {
    /// Any local address (`fib daddr type local`).
    Local,
    /// `ip daddr { ... }`
    Cidrs(Vec<Cidr>),
}

impl NodePortMatch {
    fn exprs(&self, v6: bool) -> Vec<Expr> {
        match self {
            NodePortMatch::Local => expr::fib_local(false),
            NodePortMatch::Cidrs(c) => expr::addr_in(false, v6, c),
        }
    }
}

const NAT: &str = "nat";
const FILTER: &str = "filter";
// Netfilter hooks (NF_INET_*).
const PREROUTING: u32 = 0;
const INPUT: u32 = 1;
const FORWARD: u32 = 2;
const OUTPUT: u32 = 3;
const POSTROUTING: u32 = 4;

/// A fixed chain: name, hook (for base chains) and rules.
type FixedChain = (&'static str, Option<Hook>, Vec<Vec<Expr>>);

fn jump(chain: &str) -> Expr {
    expr::verdict(Verdict::Jump(chain.to_string()))
}

fn with(mut exprs: Vec<Expr>, last: Expr) -> Vec<Expr> {
    exprs.push(last);
    exprs
}

/// Adds the table, its shared sets (emptied) and the fixed chains (rewritten).
pub fn add(batch: &mut Batch, table: &str, v6: bool, masq_bits: u32, node_ports: &NodePortMatch) {
    ops::add_table(batch, table, "rules for kube-proxy");
    for set in SharedSet::ALL {
        ops::add_shared_set(batch, table, set, v6);
    }
    let loopback = if v6 {
        Cidr {
            addr: std::net::Ipv6Addr::LOCALHOST.into(),
            prefix: 128,
        }
    } else {
        Cidr {
            addr: std::net::Ipv4Addr::new(127, 0, 0, 0).into(),
            prefix: 8,
        }
    };
    let dispatch = || Concat::new().addr(v6, false).l4proto().dport();
    let node_port_dispatch = |set: &str, skip_loopback: bool| {
        let mut r = node_ports.exprs(v6);
        if skip_loopback {
            r.extend(expr::addr_match(false, &loopback, Cmp::Neq));
        }
        r.extend(Concat::new().l4proto().dport().lookup(set, true));
        r
    };
    let new_conn = |chain: &str| with(expr::ct_state_new(), jump(chain));
    let hook = |kind, hook, priority| {
        Some(Hook {
            kind,
            hook,
            priority,
        })
    };
    let chains: Vec<FixedChain> = vec![
        (
            "mark-for-masquerade",
            None,
            vec![expr::set_mark(true, masq_bits)],
        ),
        (
            "masquerading",
            None,
            vec![
                {
                    let mut r = expr::ct_status_dnat();
                    r.extend(
                        Concat::new()
                            .addr(v6, true)
                            .addr(v6, false)
                            .lookup(SharedSet::HairpinEndpoints.name(), false),
                    );
                    r.push(Expr::MasqueradeFullyRandom);
                    r
                },
                with(expr::mark_clear(masq_bits), expr::verdict(Verdict::Return)),
                expr::set_mark(false, masq_bits),
                vec![Expr::MasqueradeFullyRandom],
            ],
        ),
        (
            "services",
            None,
            vec![
                dispatch().lookup(SharedSet::ServiceIps.name(), true),
                node_port_dispatch(SharedSet::ServiceNodeports.name(), true),
            ],
        ),
        ("reject-chain", None, vec![vec![Expr::Reject { v6 }]]),
        (
            "service-endpoints-check",
            None,
            vec![dispatch().lookup(SharedSet::NoEndpointServices.name(), true)],
        ),
        (
            "nodeport-endpoints-check",
            None,
            vec![node_port_dispatch(
                SharedSet::NoEndpointNodeports.name(),
                false,
            )],
        ),
        (
            "cluster-ips-check",
            None,
            vec![{
                let mut r = Concat::new()
                    .addr(v6, false)
                    .lookup(SharedSet::ClusterIps.name(), false);
                r.push(Expr::Reject { v6 });
                r
            }],
        ),
        (
            "nat-prerouting",
            hook(NAT, PREROUTING, -100),
            vec![vec![jump("services")]],
        ),
        (
            "nat-output",
            hook(NAT, OUTPUT, -100),
            vec![vec![jump("services")]],
        ),
        (
            "nat-postrouting",
            hook(NAT, POSTROUTING, 100),
            vec![vec![jump("masquerading")]],
        ),
        (
            "filter-input",
            hook(FILTER, INPUT, -110),
            vec![
                new_conn("nodeport-endpoints-check"),
                new_conn("service-endpoints-check"),
            ],
        ),
        (
            "filter-forward",
            hook(FILTER, FORWARD, -110),
            vec![
                new_conn("service-endpoints-check"),
                new_conn("cluster-ips-check"),
            ],
        ),
        (
            "filter-output",
            hook(FILTER, OUTPUT, -110),
            vec![new_conn("service-endpoints-check")],
        ),
        (
            "filter-output-post-dnat",
            hook(FILTER, OUTPUT, -90),
            vec![new_conn("cluster-ips-check")],
        ),
    ];
    for (name, hook, rules) in &chains {
        ops::add_chain(batch, table, name, hook.as_ref());
        ops::flush_chain(batch, table, name);
        for r in rules {
            ops::add_rule(batch, table, name, r);
        }
    }
}
