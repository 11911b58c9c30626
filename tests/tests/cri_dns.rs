//! DNS config: the pod's DNSConfig becomes the containers' /etc/resolv.conf.

use berth_proto::runtime::v1::DnsConfig;
use berth_tests::cri;

#[test]
fn dns_config_is_written_to_resolv_conf() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let mut pod_config = env.pod_config("dns");
        pod_config.dns_config = Some(DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec![
                "berth-test.svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into(), "timeout:2".into()],
        });
        let pod = env.run_pod(&pod_config).await?;
        let config = env.container_config("resolver", &["sleep", "3600"]);
        let id = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&id).await?;
        let resolv = env.exec_ok(&id, &["cat", "/etc/resolv.conf"]).await?;
        let lines: Vec<&str> = resolv
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.contains(&"nameserver 10.96.0.10"), "{resolv}");
        assert!(lines.contains(&"nameserver 10.96.0.11"), "{resolv}");
        assert!(
            lines.contains(&"search berth-test.svc.cluster.local cluster.local"),
            "{resolv}"
        );
        assert!(lines.contains(&"options ndots:5 timeout:2"), "{resolv}");
        Ok(())
    })
}
