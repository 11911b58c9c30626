//! Container logs: CRI log format at the log path, partial lines, reopen.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto::runtime::v1::{ContainerState, ReopenContainerLogRequest};
use berth_tests::cri;

/// One parsed CRI log line: `<RFC3339Nano> <stream> <P|F> <message>`.
#[derive(Debug, PartialEq)]
struct LogLine {
    stream: String,
    tag: String,
    message: String,
}

fn parse(line: &str) -> LogLine {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next().unwrap_or_default();
    assert!(
        time.len() > 20 && time.contains('T') && (time.ends_with('Z') || time.contains('+')),
        "RFC3339Nano timestamp: {line:?}"
    );
    LogLine {
        stream: parts.next().unwrap_or_default().into(),
        tag: parts.next().unwrap_or_default().into(),
        message: parts.next().unwrap_or_default().into(),
    }
}

fn read_log(path: &PathBuf) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(parse)
        .collect()
}

#[test]
fn stdout_and_stderr_lines_land_in_cri_format_at_the_log_path() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("logger", &["sh", "-c", "echo one; echo two >&2"]);
        let (_, pod_config, id) = env.pod_with_container("logs", config).await?;
        let status = env
            .wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        let path = PathBuf::from(&pod_config.log_directory).join("logger_0.log");
        assert_eq!(status.log_path, path.display().to_string());
        let lines = read_log(&path);
        let line = |stream: &str, message: &str| LogLine {
            stream: stream.into(),
            tag: "F".into(),
            message: message.into(),
        };
        assert!(lines.contains(&line("stdout", "one")), "{lines:?}");
        assert!(lines.contains(&line("stderr", "two")), "{lines:?}");
        assert_eq!(lines.len(), 2, "{lines:?}");
        Ok(())
    })
}

#[test]
fn all_output_is_logged_by_the_time_the_container_is_exited() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        // About 110 KB written right before the exit: several reads' worth, so the
        // exit is seen while output is still in the pipe.
        let config = env.container_config("burst", &["seq", "1", "20000"]);
        let (_, pod_config, id) = env.pod_with_container("burst", config).await?;
        env.wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        let lines = read_log(&PathBuf::from(&pod_config.log_directory).join("burst_0.log"));
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
        assert_eq!(messages, expected);
        Ok(())
    })
}

#[test]
fn long_lines_are_split_into_partial_entries() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        // 40000 bytes: longer than the 16 KiB line limit of containerd and berth.
        let config = env.container_config(
            "long",
            &["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"],
        );
        let (_, pod_config, id) = env.pod_with_container("partial", config).await?;
        env.wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        let lines = read_log(&PathBuf::from(&pod_config.log_directory).join("long_0.log"));
        assert!(lines.len() >= 2, "{} entries", lines.len());
        let (last, partial) = lines.split_last().expect("entries");
        assert!(partial.iter().all(|l| l.tag == "P"), "{partial:?}");
        assert_eq!(last.tag, "F");
        let joined: String = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(joined, "x".repeat(40000));
        Ok(())
    })
}

#[test]
fn reopen_container_log_starts_a_new_file_at_the_log_path() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        // Prints a line each time /tmp/go appears, then removes it.
        let config = env.container_config(
            "rotating",
            &["sh", "-c", "while true; do if [ -e /tmp/go ]; then cat /tmp/go; rm /tmp/go; fi; usleep 20000; done"],
        );
        let (_, pod_config, id) = env.pod_with_container("reopen", config).await?;
        let path = PathBuf::from(&pod_config.log_directory).join("rotating_0.log");
        let say = |word: &'static str| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("echo {word} > /tmp/go"),
            ]
        };
        let wait_for_message = |path: PathBuf, word: &'static str| async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !read_log(&path).iter().any(|l| l.message == word) {
                anyhow::ensure!(Instant::now() < deadline, "{word} never logged to {path:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        };
        let first = say("before");
        env.exec_ok(&id, &first.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        wait_for_message(path.clone(), "before").await?;

        let rotated = path.with_extension("log.1");
        std::fs::rename(&path, &rotated)?;
        env.runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await?;
        let second = say("after");
        env.exec_ok(&id, &second.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        wait_for_message(path.clone(), "after").await?;
        assert!(!read_log(&path).iter().any(|l| l.message == "before"));
        assert!(!read_log(&rotated).iter().any(|l| l.message == "after"));
        Ok(())
    })
}

#[test]
fn reopen_log_of_a_stopped_container_fails() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("stopped", &["true"]);
        let (_, _, id) = env.pod_with_container("reopen-stopped", config).await?;
        env.wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        let result = env
            .runtime
            .reopen_container_log(ReopenContainerLogRequest { container_id: id })
            .await;
        assert!(result.is_err(), "{result:?}");
        Ok(())
    })
}
