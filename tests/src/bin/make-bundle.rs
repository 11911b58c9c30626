//! `make-bundle <dir> [--hostname NAME] [-- ARGS...]`: writes an OCI bundle
//! with a busybox rootfs and the test suite's default spec at `<dir>` (which
//! must not exist yet), running ARGS (default `sh`). Used by scripts/run-node
//! and handy for trying a runtime by hand.

use anyhow::Context;
use berth_tests::bundle::Spec;
use berth_tests::image::busybox_layer;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: make-bundle <dir> [--hostname NAME] [--cgroups-path PATH] [-- ARGS...]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let mut spec = Spec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hostname" => spec = spec.hostname(&args.next().context(usage)?),
            "--cgroups-path" => spec = spec.cgroups_path(&args.next().context(usage)?),
            "--" => {
                let command: Vec<String> = args.by_ref().collect();
                let command: Vec<&str> = command.iter().map(String::as_str).collect();
                spec = spec.args(&command);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{usage}"),
        }
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs)?;
    busybox_layer()?.apply_to(&rootfs)?;
    let config = serde_json::to_vec_pretty(spec.json())?;
    std::fs::write(dir.join("config.json"), config).context("writing config.json")?;
    Ok(())
}
