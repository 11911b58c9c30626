//! `berth-image-pull`: pulls and unpacks one image into a berth image store, in its own
//! process, so tests can kill it mid-download and benchmarks can measure its peak RSS.
//!
//! Usage: berth-image-pull --root DIR [--hosts-dir DIR] [--user U --password P]
//!        [--max-concurrent-downloads N] REFERENCE

use anyhow::{Context, bail};
use berth_cri::image::{Credentials, ImageStore, StoreOptions};

fn main() -> anyhow::Result<()> {
    let mut root = None;
    let mut options = StoreOptions::default();
    let mut credentials = Credentials::anonymous();
    let mut reference = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--root" => root = Some(value()?),
            "--hosts-dir" => options.hosts_dir = Some(value()?.into()),
            "--user" => credentials.username = value()?,
            "--password" => credentials.password = value()?,
            "--max-concurrent-downloads" => options.max_concurrent_downloads = value()?.parse()?,
            flag if flag.starts_with("--") => bail!("unknown flag {flag}"),
            _ => reference = Some(arg),
        }
    }
    let root = root.context("--root is required")?;
    let reference = reference.context("an image reference is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let record = runtime.block_on(async {
        let store = ImageStore::open(&root, options)?;
        store.pull(&reference, &credentials, None).await
    })?;
    println!("{}", record.id);
    Ok(())
}
