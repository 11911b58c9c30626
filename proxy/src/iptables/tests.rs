//! Rule generation and sync planning, against a recording double of the system.

use super::*;
use crate::model::{ChangeTracker, SERVICE_NAME_LABEL, Snapshot};
use crate::net::Cidr;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

#[derive(Default)]
pub struct Recorder {
    pub restores: Vec<String>,
    pub kernel_chains: Vec<String>,
    pub canary: bool,
    pub fail_next_restore: bool,
    /// The restore with this index (counting the successful ones before it) fails.
    pub fail_restore_at: Option<usize>,
    /// Answer of `is_nf_tables_backend` (the nf_tables backend).
    pub nft: bool,
    pub route_localnet: bool,
    pub ensured: Vec<String>,
    pub chain_reads: usize,
    /// The nf_tables generation, bumped per transaction (None: the legacy backend).
    pub generation: Option<u32>,
    /// Someone else commits right after the restore with this index.
    pub foreign_commit_after: Option<usize>,
}

impl Netfilter for Recorder {
    fn restore(&mut self, _v6: bool, input: &str) -> Result<(), ExecError> {
        let fail_here = self.fail_restore_at == Some(self.restores.len());
        if std::mem::take(&mut self.fail_next_restore) || fail_here {
            self.fail_restore_at = None;
            return Err(ExecError::Failed {
                program: "iptables-restore".into(),
                status: "1".into(),
                stderr: "Bad rule".into(),
            });
        }
        self.restores.push(input.to_string());
        if let Some(g) = self.generation.as_mut() {
            *g += input.lines().filter(|l| *l == "COMMIT").count() as u32;
            if self.foreign_commit_after == Some(self.restores.len() - 1) {
                *g += 1;
            }
        }
        Ok(())
    }
    fn chains(&mut self, _v6: bool, _table: &str) -> Result<Vec<String>, ExecError> {
        self.chain_reads += 1;
        Ok(self.kernel_chains.clone())
    }
    fn ensure_rule(
        &mut self,
        _: bool,
        table: &str,
        chain: &str,
        rule: &[&str],
    ) -> Result<(), ExecError> {
        self.ensured
            .push(format!("{table} {chain} {}", rule.join(" ")));
        Ok(())
    }
    fn delete_rule(&mut self, _: bool, _: &str, _: &str, _: &[&str]) -> Result<(), ExecError> {
        Ok(())
    }
    fn chain_exists(&mut self, _: bool, _: &str, _: &str) -> Result<bool, ExecError> {
        Ok(self.canary)
    }
    fn create_chain(&mut self, _: bool, _: &str, _: &str) -> Result<(), ExecError> {
        self.canary = true;
        Ok(())
    }
    fn is_nf_tables_backend(&mut self, _: bool) -> bool {
        self.nft
    }
    fn generation(&mut self) -> Result<Option<u32>, ExecError> {
        Ok(self.generation)
    }
    fn enable_route_localnet(&mut self) -> Result<(), ExecError> {
        self.route_localnet = true;
        Ok(())
    }
}

fn options() -> IptablesOptions {
    IptablesOptions {
        families: vec![false],
        masquerade_all: false,
        masquerade_bit: 14,
        local: LocalDetector::Cidrs(vec![Cidr::parse("10.244.0.0/16").unwrap()]),
        node_port_addresses: NodePortAddresses::All,
        localhost_node_ports: true,
    }
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    json_patch::merge(&mut spec, &extra);
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(svc: &str, eps: &[(&str, bool, &str)]) -> EndpointSlice {
    let eps: Vec<_> = eps.iter().map(|(ip, ready, node)| json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node})).collect();
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": format!("{svc}-1"), "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap()
}

fn port_name(svc: &str) -> ServicePortName {
    ServicePortName {
        namespace: "ns".into(),
        name: svc.into(),
        port: "http".into(),
        protocol: crate::model::Protocol::Tcp,
    }
}

fn lines_of(input: &str, prefix: &str) -> Vec<String> {
    input
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn cluster_ip_service_gets_upstream_chains() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("web", "198.19.0.10", json!({})));
    t.apply_slice(&slice(
        "web",
        &[
            ("10.244.1.2", true, "node-b"),
            ("10.244.1.3", true, "node-a"),
            ("10.244.1.4", false, "node-a"),
        ],
    ));
    let mut p = IptablesProxier::new(Recorder::default(), options());
    let report = p.sync(&t.snapshot(), false).unwrap();
    assert!(report.full, "the first sync is full");
    let input = &p.netfilter().restores[0];
    let svc = service_chain(&port_name("web"));
    let sep2 = endpoint_chain(&port_name("web"), "10.244.1.2:8080".parse().unwrap());
    let sep3 = endpoint_chain(&port_name("web"), "10.244.1.3:8080".parse().unwrap());
    assert!(input.contains(&format!(
        "-A KUBE-SERVICES -m comment --comment \"ns/web:http cluster IP\" -m tcp -p tcp -d 198.19.0.10/32 --dport 80 -j {svc}\n"
    )));
    assert_eq!(
        lines_of(input, &format!("-A {svc} ")),
        [
            format!(
                "-A {svc} -m comment --comment \"ns/web:http cluster IP\" -m tcp -p tcp -d 198.19.0.10/32 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"
            ),
            format!(
                "-A {svc} -m comment --comment \"ns/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.5000000000 -j {sep2}"
            ),
            format!("-A {svc} -m comment --comment \"ns/web:http -> 10.244.1.3:8080\" -j {sep3}"),
        ]
    );
    assert_eq!(
        lines_of(input, &format!("-A {sep2} ")),
        [
            format!(
                "-A {sep2} -m comment --comment ns/web:http -s 10.244.1.2/32 -j KUBE-MARK-MASQ"
            ),
            format!(
                "-A {sep2} -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080"
            ),
        ]
    );
    assert!(
        !input.contains("10.244.1.4"),
        "unready endpoints get no rules"
    );
    // The NodePort jump is the last rule of nat KUBE-SERVICES.
    let nat = &input[input.find("*nat").unwrap()..];
    let last = lines_of(nat, "-A KUBE-SERVICES ").pop().unwrap();
    assert!(
        last.ends_with("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"),
        "{last}"
    );
    assert!(input.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"));
    assert!(input.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"));
}

#[test]
fn partial_sync_touches_only_the_changed_service() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("a", "198.19.0.10", json!({})));
    t.apply_service(&service("b", "198.19.0.11", json!({})));
    t.apply_slice(&slice("a", &[("10.244.1.2", true, "n")]));
    t.apply_slice(&slice("b", &[("10.244.2.2", true, "n")]));
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();

    t.apply_slice(&slice(
        "a",
        &[("10.244.1.2", true, "n"), ("10.244.1.9", true, "n")],
    ));
    let report = p.sync(&t.snapshot(), false).unwrap();
    assert!(!report.full);
    let input = p.netfilter().restores.last().unwrap().clone();
    let svc_a = service_chain(&port_name("a"));
    let sep_new = endpoint_chain(&port_name("a"), "10.244.1.9:8080".parse().unwrap());
    let sep_kept = endpoint_chain(&port_name("a"), "10.244.1.2:8080".parse().unwrap());
    assert!(input.contains(&format!(":{svc_a} - [0:0]")));
    assert!(input.contains(&format!(":{sep_new} - [0:0]")));
    assert!(
        !input.contains(&format!(":{sep_kept} ")) && !input.contains(&format!("-A {sep_kept} ")),
        "the chain of the unchanged endpoint is not rewritten:\n{input}"
    );
    assert!(
        !input.contains(&service_chain(&port_name("b"))),
        "b is untouched:\n{input}"
    );
    assert!(!input.contains("*filter"), "nothing changed in filter");
    assert!(
        !input.contains("KUBE-SERVICES"),
        "the dispatch rule of a did not change"
    );

    // All endpoints gone: the dispatch rule turns into a REJECT and the chains are deleted.
    t.apply_slice(&slice("a", &[]));
    p.sync(&t.snapshot(), false).unwrap();
    let input = p.netfilter().restores.last().unwrap().clone();
    assert!(input.contains(&format!("-D KUBE-SERVICES -m comment --comment \"ns/a:http cluster IP\" -m tcp -p tcp -d 198.19.0.10/32 --dport 80 -j {svc_a}")));
    assert!(input.contains("-I KUBE-SERVICES 1 -m comment --comment \"ns/a:http has no endpoints\" -m tcp -p tcp -d 198.19.0.10/32 --dport 80 -j REJECT"));
    assert!(input.contains(&format!("-X {svc_a}")));
    assert!(input.contains(&format!("-X {sep_new}")));
    let nat = &input[input.find("*nat").unwrap()..];
    assert!(
        nat.find("-D KUBE-SERVICES").unwrap() < nat.find(&format!("-X {svc_a}")).unwrap(),
        "references go before the chain"
    );

    assert!(p.sync(&t.snapshot(), false).is_ok());
    let count = p.netfilter().restores.len();
    p.sync(&t.snapshot(), false).unwrap();
    assert_eq!(p.netfilter().restores.len(), count, "no change, no restore");
}

#[test]
fn partial_sync_deletes_the_chains_of_a_removed_port_only() {
    let two_ports = json!({"ports": [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"}]});
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("a", "198.19.0.10", two_ports.clone()));
    t.apply_service(&service("ab", "198.19.0.11", two_ports));
    for svc in ["a", "ab"] {
        let mut s = slice(svc, &[("10.244.1.2", true, "n")]);
        s.ports = Some(
            serde_json::from_value(json!([
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"}]))
            .unwrap(),
        );
        t.apply_slice(&s);
    }
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();

    t.apply_service(&service("a", "198.19.0.10", json!({})));
    let report = p.sync(&t.snapshot(), false).unwrap();
    assert!(!report.full);
    let input = p.netfilter().restores.last().unwrap().clone();
    let dns = |svc: &str| ServicePortName {
        port: "dns".into(),
        protocol: crate::model::Protocol::Udp,
        ..port_name(svc)
    };
    assert!(
        input.contains(&format!("-X {}", service_chain(&dns("a")))),
        "the removed port's chain is deleted:\n{input}"
    );
    for kept in [port_name("a"), port_name("ab"), dns("ab")] {
        assert!(
            !input.contains(&format!("-X {}", service_chain(&kept))),
            "{kept} keeps its chain:\n{input}"
        );
    }
}

#[test]
fn failed_partial_sync_falls_back_to_full_and_full_removes_stale_chains() {
    let mut t = ChangeTracker::new("n");
    t.apply_service(&service("a", "198.19.0.10", json!({})));
    t.apply_slice(&slice("a", &[("10.244.1.2", true, "n")]));
    let recorder = Recorder {
        kernel_chains: vec![
            "KUBE-SVC-LEFTOVER0000000".into(),
            "KUBE-SERVICES".into(),
            "OTHER".into(),
        ],
        ..Default::default()
    };
    let mut p = IptablesProxier::new(recorder, options());
    p.sync(&t.snapshot(), false).unwrap();
    let first = p.netfilter().restores[0].clone();
    assert!(
        first.contains(":KUBE-SVC-LEFTOVER0000000 - [0:0]\n")
            && first.contains("-X KUBE-SVC-LEFTOVER0000000\n")
    );
    assert!(!first.contains("-X OTHER") && !first.contains("-X KUBE-SERVICES"));

    t.apply_slice(&slice("a", &[("10.244.1.3", true, "n")]));
    p.netfilter().fail_next_restore = true;
    let report = p.sync(&t.snapshot(), false).unwrap();
    assert!(report.full);
}

#[test]
fn affinity_nodeport_and_local_policy_rules() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service(
        "web",
        "198.19.0.10",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
               "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
               "externalTrafficPolicy": "Local"}),
    ));
    t.apply_slice(&slice(
        "web",
        &[
            ("10.244.1.2", true, "node-b"),
            ("10.244.1.3", true, "node-a"),
        ],
    ));
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let input = p.netfilter().restores[0].clone();
    let name = port_name("web");
    let (svc, svl, ext) = (
        service_chain(&name),
        local_chain(&name),
        external_chain(&name),
    );
    let sep3 = endpoint_chain(&name, "10.244.1.3:8080".parse().unwrap());
    assert!(input.contains(&format!(
        "-A KUBE-NODEPORTS -m comment --comment ns/web:http -m tcp -p tcp --dport 30080 -j {ext}"
    )));
    assert_eq!(
        lines_of(&input, &format!("-A {ext} ")),
        [
            format!(
                "-A {ext} -m comment --comment \"pod traffic for ns/web:http external destinations\" -s 10.244.0.0/16 -j {svc}"
            ),
            format!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for ns/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            ),
            format!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for ns/web:http external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            ),
            format!("-A {ext} -j {svl}"),
        ]
    );
    assert_eq!(
        lines_of(&input, &format!("-A {svl} ")).len(),
        2,
        "one affinity check and one pick, only the local endpoint"
    );
    assert!(input.contains(&format!("-A {svc} -m comment --comment \"ns/web:http -> 10.244.1.3:8080\" -m recent --name {sep3} --rcheck --seconds 60 --reap -j {sep3}")));
    assert!(input.contains(&format!("-A {sep3} -m comment --comment ns/web:http -m recent --name {sep3} --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.3:8080")));
}

#[test]
fn local_policy_without_local_endpoints_drops_external_traffic() {
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("web", "198.19.0.10", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "UDP", "nodePort": 30053}], "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local"})));
    let mut s = slice("web", &[("10.244.1.2", true, "node-b")]);
    s.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
    t.apply_slice(&s);
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let input = p.netfilter().restores[0].clone();
    assert!(input.contains("-A KUBE-SERVICES -m comment --comment \"ns/web:http has no local endpoints\" -m udp -p udp -d 198.19.0.10/32 --dport 80 -j DROP"));
    assert!(input.contains("-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -m udp -p udp --dport 30053 -j DROP"));
}

#[test]
fn tampering_is_detected_by_the_canary() {
    let mut t = ChangeTracker::new("n");
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    assert!(!p.tampered());
    p.netfilter().canary = false;
    assert!(p.tampered());
    assert!(p.sync(&t.snapshot(), false).unwrap().full);
}

#[test]
fn dual_stack_services_get_rules_per_family() {
    let svc: Service = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "ds"},
        "spec": {"clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10", "fd00:96::10"], "ipFamilies": ["IPv4", "IPv6"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
    .unwrap();
    let v6_slice: EndpointSlice = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "ds-v6", "labels": {SERVICE_NAME_LABEL: "ds"}},
        "addressType": "IPv6", "endpoints": [{"addresses": ["fd00:244::5"]}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    .unwrap();
    let mut t = ChangeTracker::new("n");
    t.apply_service(&svc);
    t.apply_slice(&slice("ds", &[("10.244.1.2", true, "n")]));
    t.apply_slice(&v6_slice);
    let mut opts = options();
    opts.families = vec![false, true];
    opts.local = LocalDetector::Cidrs(vec![
        Cidr::parse("10.244.0.0/16").unwrap(),
        Cidr::parse("fd00:244::/64").unwrap(),
    ]);
    let mut p = IptablesProxier::new(Recorder::default(), opts);
    p.sync(&t.snapshot(), false).unwrap();
    let (v4, v6) = (
        &p.netfilter().restores[0].clone(),
        &p.netfilter().restores[1].clone(),
    );
    assert!(v4.contains("-d 198.19.0.10/32 --dport 80") && !v4.contains("fd00"));
    assert!(v6.contains("-d fd00:96::10/128 --dport 80"), "{v6}");
    assert!(v6.contains("! -s fd00:244::/64 -j KUBE-MARK-MASQ"));
    assert!(v6.contains("-j DNAT --to-destination [fd00:244::5]:8080"));
    assert!(!v6.contains("10.244.1.2"));
}

#[test]
fn load_balancer_source_ranges_go_through_the_firewall_chain() {
    let mut svc = service(
        "lb",
        "198.19.0.10",
        json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    );
    svc.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}]}}))
            .unwrap(),
    );
    let mut t = ChangeTracker::new("n");
    t.apply_service(&svc);
    t.apply_slice(&slice("lb", &[("10.244.1.2", true, "n")]));
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let input = p.netfilter().restores[0].clone();
    let name = port_name("lb");
    let (fw, ext) = (firewall_chain(&name), external_chain(&name));
    assert!(input.contains(&format!("-A KUBE-SERVICES -m comment --comment \"ns/lb:http loadbalancer IP\" -m tcp -p tcp -d 192.0.2.50/32 --dport 80 -j {fw}")));
    assert_eq!(
        lines_of(&input, &format!("-A {fw} ")),
        [
            format!(
                "-A {fw} -m comment --comment \"ns/lb:http loadbalancer IP\" -s 203.0.113.0/24 -j {ext}"
            ),
            format!(
                "-A {fw} -m comment --comment \"other traffic to ns/lb:http will be dropped by KUBE-PROXY-FIREWALL\""
            ),
        ]
    );
    assert!(input.contains(&format!("-A KUBE-PROXY-FIREWALL -m comment --comment \"ns/lb:http traffic not accepted by {fw}\" -m tcp -p tcp -d 192.0.2.50/32 --dport 80 -j DROP")));
}

#[test]
fn full_sync_on_nf_tables_is_batched_and_self_contained() {
    let mut t = ChangeTracker::new("n");
    for i in 0..120 {
        let name = format!("s{i}");
        t.apply_service(&service(&name, &format!("198.19.0.{}", i + 1), json!({})));
        t.apply_slice(&slice(
            &name,
            &[("10.244.1.2", true, "n"), ("10.244.1.3", true, "n")],
        ));
    }
    let recorder = Recorder {
        nft: true,
        kernel_chains: vec!["KUBE-SEP-LEFTOVER0000000".into()],
        ..Default::default()
    };
    let mut p = IptablesProxier::new(recorder, options());
    p.sync(&t.snapshot(), false).unwrap();
    // 120 ports x 3 chains in runs of one transaction of about NFT_CHAINS_PER_RUN chains,
    // framed by the static chains first and the shared chains (filter, then nat) last.
    let restores = p.netfilter().restores.clone();
    assert_eq!(
        restores.len(),
        1 + 360usize.div_ceil(NFT_CHAINS_PER_RUN + 2) + 1
    );
    for run in &restores[..restores.len() - 1] {
        assert_eq!(lines_of(run, "COMMIT").len(), 1, "one transaction per run");
    }
    assert!(restores[0].contains(":KUBE-MARK-MASQ - [0:0]") && !restores[0].contains("KUBE-SVC-"));
    let last = restores.last().unwrap();
    assert!(!last.contains(":KUBE-SVC-") && last.contains("-X KUBE-SEP-LEFTOVER0000000"));
    assert_eq!(
        lines_of(last, "-A KUBE-SERVICES -m comment --comment \"ns/s").len(),
        120
    );
    for batch in &restores[1..restores.len() - 1] {
        assert!(!batch.contains("KUBE-SERVICES") && !batch.contains("-X "));
        // Every chain a batch jumps to is declared in that batch (or is static).
        for target in batch.split_whitespace().filter(|w| w.starts_with("KUBE-S")) {
            assert!(batch.contains(&format!(":{target} - [0:0]")), "{target}");
        }
    }
    let declared: usize = restores.iter().map(|r| lines_of(r, ":KUBE-S").len()).sum();
    assert!(declared >= 360);

    // The next full sync knows the kernel's chains already; a chain dropped since is deleted.
    t.delete_service(&service("s0", "198.19.0.1", json!({})));
    p.netfilter().restores.clear();
    p.sync(&t.snapshot(), true).unwrap();
    assert_eq!(
        p.netfilter().chain_reads,
        1,
        "the nat table is listed only once"
    );
    let last = p.netfilter().restores.last().unwrap().clone();
    assert!(last.contains(&format!("-X {}", service_chain(&port_name("s0")))));
    assert!(!last.contains("LEFTOVER"), "deleted already");
}

#[test]
fn localhost_node_ports_set_route_localnet_and_guard_it() {
    let empty = || Snapshot {
        state: Default::default(),
        changed: Default::default(),
    };
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&empty(), false).unwrap();
    assert!(p.netfilter().route_localnet);
    let input = p.netfilter().restores[0].clone();
    assert!(input.contains("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
    assert!(input.contains("-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"));
    assert!(
        p.netfilter()
            .ensured
            .iter()
            .any(|j| j == "filter INPUT -j KUBE-FIREWALL")
    );

    // Disabled: loopback destinations never reach KUBE-NODEPORTS, and the sysctl is left alone.
    let mut opts = options();
    opts.localhost_node_ports = false;
    opts.families = vec![false, true];
    let mut p = IptablesProxier::new(Recorder::default(), opts);
    p.sync(&empty(), false).unwrap();
    assert!(!p.netfilter().route_localnet);
    let (v4, v6) = (
        p.netfilter().restores[0].clone(),
        p.netfilter().restores[1].clone(),
    );
    assert!(v4.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"));
    assert!(!v4.contains("KUBE-FIREWALL"));
    assert!(
        v6.contains("-m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS"),
        "never on IPv6"
    );
}

#[test]
fn endpoint_rules_lose_their_comments_above_1000_endpoints() {
    let ips: Vec<String> = (0..=rules::LARGE_CLUSTER_ENDPOINTS)
        .map(|i| format!("10.244.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|ip| (ip.as_str(), true, "node-b")).collect();
    let mut t = ChangeTracker::new("node-a");
    t.apply_service(&service("big", "198.19.0.10", json!({})));
    t.apply_slice(&slice("big", &eps));
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    let input = p.netfilter().restores.concat();
    let svc = names::service_chain(&port_name("big"));
    let endpoint_rules: Vec<&str> = input
        .lines()
        .filter(|l| {
            l.starts_with("-A KUBE-SEP-")
                || l.starts_with(&format!("-A {svc} -j KUBE-SEP-"))
                || l.starts_with(&format!("-A {svc} -m statistic"))
        })
        .collect();
    assert_eq!(endpoint_rules.len(), 3 * ips.len(), "{input}");
    assert!(
        !input.contains("-> 10.244."),
        "balancing rules kept comments"
    );
    assert!(
        !lines_of(&input, "-A KUBE-SEP-")
            .iter()
            .any(|l| l.contains("--comment")),
        "endpoint chains kept comments"
    );
    // Rules outside the endpoint chains keep theirs, as upstream.
    assert!(input.contains("--comment \"ns/big:http cluster IP\""));

    // Back at 1000 endpoints, a full sync writes the comments again.
    t.apply_slice(&slice("big", &eps[1..]));
    p.sync(&t.snapshot(), true).unwrap();
    let input = p.netfilter().restores.last().unwrap().clone();
    assert!(
        input.contains(&format!(
            "-A {svc} -m comment --comment \"ns/big:http -> {}:8080\"",
            ips[1]
        )),
        "{input}"
    );
}

#[test]
fn full_sync_of_an_untouched_nf_tables_ruleset_sends_only_differences() {
    let mut t = ChangeTracker::new("n");
    for name in ["a", "b"] {
        t.apply_service(&service(
            name,
            if name == "a" {
                "198.19.0.10"
            } else {
                "198.19.0.11"
            },
            json!({}),
        ));
    }
    t.apply_slice(&slice("a", &[("10.244.1.2", true, "n")]));
    t.apply_slice(&slice("b", &[("10.244.2.2", true, "n")]));
    let recorder = Recorder {
        nft: true,
        generation: Some(41),
        ..Default::default()
    };
    let mut p = IptablesProxier::new(recorder, options());
    p.sync(&t.snapshot(), false).unwrap();
    let svc_b = service_chain(&port_name("b"));
    assert!(
        p.netfilter()
            .restores
            .concat()
            .contains(&format!(":{svc_b} - [0:0]"))
    );
    let ensured = p.netfilter().ensured.len();
    let runs = p.netfilter().restores.len();

    // Nothing committed since: a full sync has nothing to send.
    let report = p.sync(&t.snapshot(), true).unwrap();
    assert!(report.full);
    assert_eq!(
        p.netfilter().restores.len(),
        runs,
        "no restore without differences"
    );

    // One endpoint of a changes: the full sync rewrites a's chains only.
    t.apply_slice(&slice("a", &[("10.244.1.9", true, "n")]));
    p.sync(&t.snapshot(), true).unwrap();
    let input = p.netfilter().restores.last().unwrap().clone();
    assert!(input.contains(&format!(":{} - [0:0]", service_chain(&port_name("a")))));
    assert!(!input.contains(&svc_b), "b is untouched:\n{input}");

    // Someone else committed (maybe into our chains): everything is rewritten, the
    // kernel's chains re-read and the jumps re-ensured.
    *p.netfilter().generation.as_mut().unwrap() += 1;
    let reads = p.netfilter().chain_reads;
    let before = p.netfilter().restores.len();
    p.sync(&t.snapshot(), true).unwrap();
    let input = p.netfilter().restores[before..].concat();
    assert!(input.contains(&format!(":{svc_b} - [0:0]")), "{input}");
    assert_eq!(p.netfilter().chain_reads, reads + 1);
    assert_eq!(p.netfilter().ensured.len(), 2 * ensured);

    // Our own partial sync keeps the ruleset known; a foreign commit during it does not.
    t.apply_slice(&slice("b", &[("10.244.2.3", true, "n")]));
    p.sync(&t.snapshot(), false).unwrap();
    let count = p.netfilter().restores.len();
    p.sync(&t.snapshot(), true).unwrap();
    assert_eq!(p.netfilter().restores.len(), count, "still untouched");
}

/// Services s0, s1, ... with one endpoint each.
fn services_with_one_endpoint(count: usize) -> ChangeTracker {
    let mut t = ChangeTracker::new("n");
    for i in 0..count {
        let name = format!("s{i}");
        t.apply_service(&service(
            &name,
            &format!("198.19.1.{}", i % 250 + 1),
            json!({}),
        ));
        t.apply_slice(&slice(&name, &[("10.244.1.2", true, "n")]));
    }
    t
}

#[test]
fn a_foreign_commit_between_the_runs_of_a_rewrite_forces_the_next_rewrite() {
    let mut t = services_with_one_endpoint(400);
    let recorder = Recorder {
        nft: true,
        generation: Some(7),
        foreign_commit_after: Some(1),
        ..Default::default()
    };
    let mut p = IptablesProxier::new(recorder, options());
    p.sync(&t.snapshot(), false).unwrap();
    let runs = p.netfilter().restores.len();
    assert!(runs > 3, "the rewrite takes several runs");
    // The ruleset may not be what we wrote: the next full sync rewrites everything, over
    // chains in place now, so in fewer, larger runs.
    p.sync(&t.snapshot(), true).unwrap();
    let rewrite = p.netfilter().restores[runs..].concat();
    assert_eq!(lines_of(&rewrite, ":KUBE-SVC-").len(), 400);
    let after = p.netfilter().restores.len();
    assert!(after - runs < runs, "{} runs in place", after - runs);
    // That one ran undisturbed: the one after has nothing to send.
    p.sync(&t.snapshot(), true).unwrap();
    assert_eq!(p.netfilter().restores.len(), after);
}

#[test]
fn without_a_generation_every_full_sync_rewrites_everything() {
    let mut t = ChangeTracker::new("n");
    t.apply_service(&service("a", "198.19.0.10", json!({})));
    t.apply_slice(&slice("a", &[("10.244.1.2", true, "n")]));
    // The legacy backend: no generation to prove the ruleset untouched.
    let mut p = IptablesProxier::new(Recorder::default(), options());
    p.sync(&t.snapshot(), false).unwrap();
    p.sync(&t.snapshot(), true).unwrap();
    let input = p.netfilter().restores.last().unwrap().clone();
    assert_eq!(p.netfilter().restores.len(), 2);
    assert!(input.contains(&format!(":{} - [0:0]", service_chain(&port_name("a")))));
    assert!(input.contains(":KUBE-SERVICES - [0:0]"));
}

#[test]
fn a_rewrite_that_fails_midway_is_finished_by_the_next_full_sync() {
    let mut t = services_with_one_endpoint(400);
    let recorder = Recorder {
        nft: true,
        ..Default::default()
    };
    let mut p = IptablesProxier::new(recorder, options());
    p.sync(&t.snapshot(), false).unwrap();
    for i in 0..200 {
        t.delete_service(&service(&format!("s{i}"), "198.19.1.1", json!({})));
    }
    // The static chains and the first batch of chains go in, then a run fails.
    let before = p.netfilter().restores.len();
    p.netfilter().fail_restore_at = Some(before + 2);
    assert!(p.sync(&t.snapshot(), true).is_err());
    assert_eq!(p.netfilter().restores.len(), before + 2);

    // The next sync is a full one and deletes the chains of every removed Service,
    // whether the failed rewrite got to them or not, and none of those still wanted.
    let report = p.sync(&t.snapshot(), false).unwrap();
    assert!(report.full);
    let last = p.netfilter().restores.last().unwrap().clone();
    let deleted = lines_of(&last, "-X ");
    for i in 0..400 {
        let svc = service_chain(&port_name(&format!("s{i}")));
        assert_eq!(deleted.contains(&format!("-X {svc}")), i < 200, "s{i}");
    }
    assert_eq!(
        deleted.len(),
        200 * 2,
        "a Service chain and an endpoint chain each"
    );
    assert_eq!(report.rules, 200 * (1 + 2 + 2));
}
