//! The images every CRI test uses, pushed to the test's local registry: a
//! busybox image (static busybox, `sh` as its command) and a pause image whose
//! entry point is a busybox shell that idles until SIGTERM/SIGINT (only
//! runtimes that run a sandbox image, i.e. containerd, use it).

use crate::registry::{ImageBuilder, Registry, busybox_layer};

/// Idles as PID 1 and exits 0 on SIGTERM/SIGINT, like the pause program.
const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done";

#[derive(Clone, Debug)]
pub struct TestImages {
    /// `<registry>/berth-test/busybox:1`.
    pub busybox: String,
    /// `<registry>/berth-test/pause:3.9`.
    pub pause: String,
}

impl TestImages {
    pub async fn push(registry: &Registry) -> anyhow::Result<TestImages> {
        let pusher = registry.pusher()?;
        let busybox = ImageBuilder::new()
            .layer(busybox_layer().build(crate::registry::LayerCompression::Gzip))
            .cmd(&["/bin/sh"])
            .build();
        pusher
            .push_image("berth-test/busybox", "1", &busybox)
            .await?;
        let pause = ImageBuilder::new()
            .layer(busybox_layer().build(crate::registry::LayerCompression::Gzip))
            .cmd(&["/bin/sh", "-c", PAUSE_SCRIPT])
            .build();
        pusher.push_image("berth-test/pause", "3.9", &pause).await?;
        let host = registry.host();
        Ok(TestImages {
            busybox: format!("{host}/berth-test/busybox:1"),
            pause: format!("{host}/berth-test/pause:3.9"),
        })
    }
}
