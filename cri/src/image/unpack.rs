//! Extraction of one layer tar into its own directory, in the form overlayfs reads.
//!
//! Hostile archives are expected. Every path is resolved by the kernel inside the layer
//! directory (openat2 with RESOLVE_IN_ROOT), so `..`, absolute paths and symlinks
//! (including one written earlier in the same archive and then used as a parent) all
//! stay inside it; the final component is always created with *at calls that never
//! follow it. OCI whiteouts become overlayfs whiteouts: `.wh.x` a 0:0 character device
//! `x`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! The tar crate only parses here: its own unpack follows symlinks in parents by path,
//! which is exactly what a hostile layer exploits.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use super::digest::{Digest, HashingReader};
use super::media::Compression;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Symlinks followed while making one path's directories, as the kernel's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?}: {op}: {source}")]
    Entry {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading layer archive: {0}")]
    Read(#[source] io::Error),
    #[error("entry {entry:?}: {reason}")]
    Invalid { entry: String, reason: String },
}

/// What an unpacked layer turned out to be.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream (the layer's diff id).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Decompresses `blob` and extracts it into the existing, empty directory `dest`.
pub fn unpack_layer(
    blob: impl Read,
    compression: Compression,
    dest: &Path,
) -> Result<Unpacked, UnpackError> {
    let tar_stream: Box<dyn Read> = match compression {
        Compression::None => Box::new(io::BufReader::with_capacity(1 << 20, blob)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 20, blob),
        )),
        Compression::Zstd => Box::new(zstd::Decoder::new(blob).map_err(UnpackError::Read)?),
    };
    let mut hashed = HashingReader::new(tar_stream);
    let root = open_root(dest)?;
    let mut extractor = Extractor {
        root: root.as_fd(),
        dir_times: Vec::new(),
        buf: vec![0; 1 << 18],
    };
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let entry = entry.map_err(UnpackError::Read)?;
            extractor.extract(entry)?;
        }
    }
    extractor.finish_dir_times()?;
    let (diff_id, uncompressed_size) = hashed.finish().map_err(UnpackError::Read)?;
    Ok(Unpacked {
        diff_id,
        uncompressed_size,
    })
}

fn open_root(dest: &Path) -> Result<OwnedFd, UnpackError> {
    let file = File::open(dest).map_err(|source| UnpackError::Entry {
        entry: dest.display().to_string(),
        op: "open layer directory",
        source,
    })?;
    Ok(file.into())
}

/// The path of an entry made relative to the layer root: empty and `.` parts dropped,
/// `..` clamped at the root (as `filepath.Clean("/" + p)` would).
fn clean_components(raw: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    /// Directories get their mtime last: creating their children changes it.
    dir_times: Vec<(Vec<u8>, i64)>,
    buf: Vec<u8>,
}

impl Extractor<'_> {
    fn extract<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let err = |op: &'static str| {
            let entry = display.clone();
            move |source: io::Error| UnpackError::Entry { entry, op, source }
        };
        let parts = clean_components(&raw_path);
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            return Ok(());
        }
        let Some((name, parent_parts)) = parts.split_last() else {
            // The layer root itself ("./"): its metadata belongs to the image's root dir,
            // which overlayfs takes from the upper layer; nothing to create.
            return Ok(());
        };
        let parent = self
            .ensure_dir(parent_parts)
            .map_err(err("create parent directories"))?;
        let name = OsStr::from_bytes(name);

        if name.as_bytes() == OPAQUE_WHITEOUT.as_bytes() {
            return set_xattr(parent.as_fd(), OsStr::new("."), OPAQUE_XATTR, b"y")
                .map_err(err("mark directory opaque"));
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            remove_existing(parent.as_fd(), hidden, false).map_err(err("remove whited-out"))?;
            return mknodat(parent.as_fd(), hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| err("create whiteout")(e.into()));
        }

        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().map_err(err("read mode"))? & 0o7777);
        let uid = header.uid().map_err(err("read uid"))?;
        let gid = header.gid().map_err(err("read gid"))?;
        let mtime = header.mtime().map_err(err("read mtime"))? as i64;
        let is_dir = kind == EntryType::Directory;
        remove_existing(parent.as_fd(), name, is_dir).map_err(err("replace existing"))?;

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = nix::fcntl::openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| err("create file")(e.into()))?;
                let mut file = File::from(fd);
                copy_with(&mut entry, &mut file, &mut self.buf).map_err(err("write file"))?;
            }
            EntryType::Directory => match mkdirat(parent.as_fd(), name, 0o755) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err("create directory")(e.into())),
            },
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Invalid {
                        entry: display.clone(),
                        reason: "symlink without a target".into(),
                    })?;
                symlinkat(OsStr::from_bytes(&target), parent.as_fd(), name)
                    .map_err(|e| err("create symlink")(e.into()))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Invalid {
                        entry: display.clone(),
                        reason: "hardlink without a target".into(),
                    })?
                    .into_owned();
                let target_parts = clean_components(&target);
                let Some((target_name, target_parent)) = target_parts.split_last() else {
                    return Err(UnpackError::Invalid {
                        entry: display,
                        reason: "hardlink to the layer root".into(),
                    });
                };
                let target_dir = self
                    .open_dir(target_parent)
                    .map_err(err("open hardlink target directory"))?;
                // Flags 0: a symlink target is linked itself, never followed.
                linkat(
                    target_dir.as_fd(),
                    OsStr::from_bytes(target_name),
                    parent.as_fd(),
                    name,
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(|e| err("create hardlink")(e.into()))?;
                // The inode's metadata came with its first name.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                // Fifos carry no device numbers (their fields may be blank).
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (
                        header
                            .device_major()
                            .map_err(err("read device"))?
                            .unwrap_or(0),
                        header
                            .device_minor()
                            .map_err(err("read device"))?
                            .unwrap_or(0),
                    )
                };
                let dev = libc::makedev(major, minor);
                mknodat(parent.as_fd(), name, sflag, mode, dev)
                    .map_err(|e| err("create device")(e.into()))?;
            }
            other => {
                return Err(UnpackError::Invalid {
                    entry: display,
                    reason: format!("unsupported tar entry type {other:?}"),
                });
            }
        }

        fchownat(
            parent.as_fd(),
            name,
            Some(Uid::from_raw(uid as u32)),
            Some(Gid::from_raw(gid as u32)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| err("chown")(e.into()))?;
        if let Some(pax) = entry.pax_extensions().map_err(err("read pax headers"))? {
            for ext in pax {
                let ext = ext.map_err(err("read pax headers"))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    set_xattr(parent.as_fd(), name, xattr, ext.value_bytes())
                        .map_err(err("set xattr"))?;
                }
            }
        }
        if kind != EntryType::Symlink {
            // chown cleared set-id bits, so the mode comes after it. The name is not a
            // symlink (we just made it), so following is harmless.
            fchmodat(parent.as_fd(), name, mode, FchmodatFlags::FollowSymlink)
                .map_err(|e| err("chmod")(e.into()))?;
        }
        if is_dir {
            let mut path = join(parent_parts);
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
            self.dir_times.push((path, mtime));
        } else {
            set_mtime(parent.as_fd(), name, mtime).map_err(err("set mtime"))?;
        }
        Ok(())
    }

    /// Opens a directory of the layer, resolved inside the root.
    fn open_dir(&self, parts: &[&[u8]]) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        Ok(openat2(self.root, OsStr::from_bytes(&join(parts)), how)?)
    }

    /// Opens a directory of the layer, creating missing ones on the way (mode 0755, as
    /// tar does for directories an archive does not list). A symlink on the way whose
    /// target does not exist yet is followed by hand, inside the root, and the target's
    /// directories are made: the same place the kernel's in-root resolution points at.
    fn ensure_dir(&self, parts: &[&[u8]]) -> io::Result<OwnedFd> {
        match self.open_dir(parts) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        // Components still to walk, last first; `resolved` holds only real directories.
        let mut pending: Vec<Vec<u8>> = parts.iter().rev().map(|p| p.to_vec()).collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut links_followed = 0;
        while let Some(part) = pending.pop() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let refs: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
            let parent = self.open_dir(&refs)?;
            let name = OsStr::from_bytes(&part);
            match fstatat(
                parent.as_fd(),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    links_followed += 1;
                    if links_followed > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = nix::fcntl::readlinkat(parent.as_fd(), name)?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    pending.extend(target.split(|b| *b == b'/').rev().map(<[u8]>::to_vec));
                }
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => resolved.push(part),
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Err(Errno::ENOENT) => {
                    match mkdirat(parent.as_fd(), name, 0o755) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    resolved.push(part);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let refs: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
        self.open_dir(&refs)
    }

    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            let parts = clean_components(&path);
            let err = |source| UnpackError::Entry {
                entry: String::from_utf8_lossy(&path).into_owned(),
                op: "set directory mtime",
                source,
            };
            let dir = self.open_dir(&parts).map_err(err)?;
            set_mtime(dir.as_fd(), OsStr::new("."), mtime).map_err(err)?;
        }
        Ok(())
    }
}

fn copy_with(from: &mut impl Read, to: &mut File, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Removes what sits at `name` unless both it and the new entry are directories (a later
/// entry for an existing directory only updates its metadata).
fn remove_existing(dir: BorrowedFd<'_>, name: &OsStr, new_is_dir: bool) -> io::Result<()> {
    let st = match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let existing_is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if existing_is_dir {
        if new_is_dir {
            return Ok(());
        }
        // remove_dir_all never follows symlinks; the /proc path only names our own fd.
        let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        return std::fs::remove_dir_all(path);
    }
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    Ok(())
}

fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> Result<(), Errno> {
    let name = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid fd and NUL-terminated name for the duration of the call.
    Errno::result(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

fn set_mtime(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(dir, name, &t)
}

fn utimensat(dir: BorrowedFd<'_>, name: &OsStr, t: &TimeSpec) -> io::Result<()> {
    nix::sys::stat::utimensat(dir, name, t, t, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Sets an xattr on `name` inside `dir` without following a final symlink. There is no
/// `lsetxattrat`, so the directory is named through its /proc fd link.
fn set_xattr(dir: BorrowedFd<'_>, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let key = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: all pointers are valid for the call; lengths match the buffers.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_parent_components_at_the_root() {
        assert_eq!(
            clean_components(b"../../etc/passwd"),
            vec![b"etc" as &[u8], b"passwd"]
        );
        assert_eq!(
            clean_components(b"/abs/./x/../y"),
            vec![b"abs" as &[u8], b"y"]
        );
        assert!(clean_components(b"./").is_empty());
    }
}
