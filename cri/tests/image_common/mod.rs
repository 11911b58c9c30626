//! Shared setup of the image integration tests: a registry, a store in a temp dir with
//! a hosts dir pointing at the registry, and a private mount namespace for overlay work.
#![allow(dead_code)] // each test file uses a different part

use std::path::Path;

use berth_cri::image::{Credentials, ImageError, ImageRecord, ImageStore, StoreOptions};
use berth_tests::registry::{
    BuiltImage, ImageBuilder, LayerBuilder, LayerCompression, Registry, RegistryOptions,
};

pub struct Env {
    pub registry: Registry,
    pub root: tempfile::TempDir,
    pub hosts: tempfile::TempDir,
}

impl Env {
    pub fn start(options: RegistryOptions) -> Env {
        let registry = Registry::start(options).expect("start registry");
        let hosts = tempfile::tempdir().unwrap();
        registry.write_hosts_toml(hosts.path()).unwrap();
        Env {
            registry,
            root: tempfile::tempdir().unwrap(),
            hosts,
        }
    }

    pub fn store(&self) -> ImageStore {
        self.store_at(self.root.path())
    }

    pub fn store_at(&self, root: &Path) -> ImageStore {
        ImageStore::open(
            root,
            StoreOptions {
                hosts_dir: Some(self.hosts.path().to_path_buf()),
                ..Default::default()
            },
        )
        .unwrap()
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host())
    }

    /// Pushes `image` as `repo:tag` and returns the reference that pulls it.
    pub async fn push(&self, repo: &str, tag: &str, image: &BuiltImage) -> String {
        self.registry
            .pusher()
            .unwrap()
            .push_image(repo, tag, image)
            .await
            .unwrap();
        self.reference(&format!("{repo}:{tag}"))
    }
}

/// Runs `f` on a thread that has its own private mount namespace: its mounts are never
/// visible on the host and vanish when the thread ends.
pub fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount ns");
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / rprivate");
            f()
        })
        .join()
        .expect("mount-namespace thread")
    })
}

pub fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An image of one gzip layer holding one file (mode 0644).
pub fn one_file_image(path: &str, content: impl Into<Vec<u8>>) -> BuiltImage {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file(path, content, 0o644)
                .build(LayerCompression::Gzip),
        )
        .build()
}

/// Asserts that a pull failed with this HTTP status from the registry.
pub fn assert_registry_status(err: &ImageError, status: u16) {
    assert!(
        matches!(err, ImageError::Registry { status: Some(s), .. } if *s == status),
        "expected registry status {status}: {err}"
    );
}

/// Pulls `reference` for this host's platform without credentials.
pub async fn pull_anonymously(
    store: &ImageStore,
    reference: &str,
) -> Result<ImageRecord, ImageError> {
    store.pull(reference, &Credentials::anonymous(), None).await
}

/// The extended attribute `name` of `path` itself (not a link's target).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is as long as we say.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}
