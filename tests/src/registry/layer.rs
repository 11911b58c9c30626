//! Builds layer tarballs entry by entry: files, dirs, symlinks, hardlinks, devices,
//! OCI whiteouts, xattrs, ownership and modes, and deliberately hostile entries
//! (`..`, absolute paths) that the tar crate's own builder would refuse to write.

use std::io::Write;

use sha2::{Digest as _, Sha256};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

impl LayerCompression {
    pub fn oci_media_type(self) -> &'static str {
        match self {
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Docker schema 2 has no zstd type; such layers keep the OCI one, as buildkit does.
    pub fn docker_media_type(self) -> &'static str {
        match self {
            LayerCompression::None => "application/vnd.docker.image.rootfs.diff.tar",
            LayerCompression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            LayerCompression::Zstd => self.oci_media_type(),
        }
    }
}

/// A finished layer: the blob as pushed and the digests an image refers to it by.
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub compression: LayerCompression,
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct Entry {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Collects entries in archive order; `build` writes them.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, path: impl AsRef<[u8]>, kind: Kind, mode: u32) -> Self {
        self.entries.push(Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        });
        self
    }

    pub fn file(self, path: impl AsRef<[u8]>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.push(path, Kind::File(data.into()), mode)
    }

    pub fn dir(self, path: impl AsRef<[u8]>, mode: u32) -> Self {
        self.push(path, Kind::Dir, mode)
    }

    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.push(path, Kind::Symlink(target.as_ref().to_vec()), 0o777)
    }

    pub fn hardlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.push(path, Kind::Hardlink(target.as_ref().to_vec()), 0o644)
    }

    pub fn char_device(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.push(path, Kind::Char(major, minor), 0o666)
    }

    pub fn block_device(self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.push(path, Kind::Block(major, minor), 0o660)
    }

    pub fn fifo(self, path: impl AsRef<[u8]>) -> Self {
        self.push(path, Kind::Fifo, 0o644)
    }

    /// An OCI whiteout hiding `path` of lower layers (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(wh, Vec::new(), 0o644)
    }

    /// An opaque marker: `dir` shows none of the lower layers' content.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(format!("{dir}/.wh..wh..opq"), Vec::new(), 0o644)
    }

    /// Sets owner of the last entry.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        if let Some(e) = self.entries.last_mut() {
            e.uid = uid;
            e.gid = gid;
        }
        self
    }

    /// Adds an xattr (PAX `SCHILY.xattr.`) to the last entry.
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        if let Some(e) = self.entries.last_mut() {
            e.xattrs.push((name.to_string(), value.into()));
        }
        self
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for e in &self.entries {
            if !e.xattrs.is_empty() {
                let pax: Vec<(String, &[u8])> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                builder
                    .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                    .expect("writing to a Vec cannot fail");
            }
            let mut header = tar::Header::new_gnu();
            let (entry_type, data, link): (_, &[u8], Option<&[u8]>) = match &e.kind {
                Kind::File(d) => (tar::EntryType::Regular, d, None),
                Kind::Dir => (tar::EntryType::Directory, &[], None),
                Kind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(t)),
                Kind::Hardlink(t) => (tar::EntryType::Link, &[], Some(t)),
                Kind::Char(..) => (tar::EntryType::Char, &[], None),
                Kind::Block(..) => (tar::EntryType::Block, &[], None),
                Kind::Fifo => (tar::EntryType::Fifo, &[], None),
            };
            header.set_entry_type(entry_type);
            header.set_size(data.len() as u64);
            header.set_mode(e.mode);
            header.set_uid(e.uid);
            header.set_gid(e.gid);
            header.set_mtime(e.mtime);
            if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
                header
                    .set_device_major(ma)
                    .expect("gnu header has device fields");
                header
                    .set_device_minor(mi)
                    .expect("gnu header has device fields");
            }
            // Raw name bytes: hostile test layers need `..` and absolute paths, which
            // Header::set_path refuses.
            assert!(e.path.len() < 100, "test layer paths are short");
            let old = header.as_old_mut();
            old.name = [0; 100];
            old.name[..e.path.len()].copy_from_slice(&e.path);
            if let Some(link) = link {
                assert!(link.len() < 100, "test link targets are short");
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link);
            }
            header.set_cksum();
            builder
                .append(&header, data)
                .expect("writing to a Vec cannot fail");
        }
        builder.into_inner().expect("writing to a Vec cannot fail")
    }

    pub fn build(&self, compression: LayerCompression) -> Layer {
        let tar = self.tar();
        let diff_id = sha256_digest(&tar);
        let blob = compress(&tar, compression);
        Layer {
            digest: sha256_digest(&blob),
            blob,
            compression,
            diff_id,
        }
    }
}

pub fn compress(data: &[u8], compression: LayerCompression) -> Vec<u8> {
    match compression {
        LayerCompression::None => data.to_vec(),
        LayerCompression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).expect("writing to a Vec cannot fail");
            enc.finish().expect("writing to a Vec cannot fail")
        }
        LayerCompression::Zstd => zstd::encode_all(data, 3).expect("zstd into memory"),
    }
}

/// A layer with Debian's static busybox at /bin/busybox and a symlink per applet, plus
/// the usual top-level dirs, so containers can run `sh -c ...`.
pub fn busybox_layer() -> LayerBuilder {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed (/bin/busybox)");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("run busybox --list");
    let mut layer = LayerBuilder::new();
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "root", "var"] {
        layer = layer.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 });
    }
    layer = layer.file("bin/busybox", busybox, 0o755);
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" {
            layer = layer.symlink(format!("bin/{applet}"), "busybox");
        }
    }
    layer
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
}

/// Deterministic pseudo-random bytes (xorshift): incompressible content for benchmarks
/// without pulling in a random-number crate.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
