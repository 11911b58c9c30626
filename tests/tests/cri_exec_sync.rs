//! ExecSync: output, exit code, timeout.

use berth_tests::cri;

#[test]
fn exec_sync_returns_stdout_stderr_and_exit_code() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("exec", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("exec-sync", config).await?;
        let response = env
            .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 30)
            .await?;
        assert_eq!(response.stdout, b"out\n");
        assert_eq!(response.stderr, b"err\n");
        assert_eq!(response.exit_code, 7);
        Ok(())
    })
}

#[test]
fn exec_sync_runs_in_the_container() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config(
            "marker",
            &["sh", "-c", "echo inside > /tmp/marker; sleep 3600"],
        );
        let (_, _, id) = env.pod_with_container("exec-ns", config).await?;
        let marker = env.exec_until_ok(&id, &["cat", "/tmp/marker"]).await?;
        assert_eq!(marker, "inside\n");
        Ok(())
    })
}

#[test]
fn exec_sync_timeout_ends_the_call_with_an_error() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("slow", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("exec-timeout", config).await?;
        let err = env.exec_sync(&id, &["sleep", "601"], 1).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("gRPC status");
        // The kubelet tells exec probe timeouts apart by DeadlineExceeded.
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        // The timed-out process was killed before the call returned.
        let processes = env.exec_ok(&id, &["ps", "-o", "pid,args"]).await?;
        assert!(
            processes.contains("sleep 3600") && !processes.contains("sleep 601"),
            "{processes}"
        );
        Ok(())
    })
}

#[test]
fn exec_sync_in_a_stopped_container_fails() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("gone", &["true"]);
        let (_, _, id) = env.pod_with_container("exec-stopped", config).await?;
        env.wait_container_state(
            &id,
            berth_proto::runtime::v1::ContainerState::ContainerExited,
        )
        .await?;
        assert!(env.exec_sync(&id, &["true"], 10).await.is_err());
        Ok(())
    })
}
