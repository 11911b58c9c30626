//! CRI runtime info: Version and Status.

use berth_proto::runtime::v1::{StatusRequest, VersionRequest};
use berth_tests::cri;

#[test]
fn version_names_the_runtime_and_cri_v1() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let version = env
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner();
        assert_eq!(version.runtime_api_version, "v1");
        assert!(!version.runtime_name.is_empty(), "{version:?}");
        assert!(!version.runtime_version.is_empty(), "{version:?}");
        assert_eq!(version.version, "0.1.0", "kubelet API version of CRI v1");
        Ok(())
    })
}

#[test]
fn status_reports_runtime_and_network_ready() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let status = env
            .runtime
            .status(StatusRequest { verbose: true })
            .await?
            .into_inner();
        let conditions = status.status.expect("status").conditions;
        for wanted in ["RuntimeReady", "NetworkReady"] {
            let condition = conditions
                .iter()
                .find(|c| c.r#type == wanted)
                .unwrap_or_else(|| panic!("no {wanted} in {conditions:?}"));
            assert!(condition.status, "{condition:?}");
        }
        Ok(())
    })
}
