//! Mount option parsing: the spec's option strings to mount(2) flags, propagation
//! changes and filesystem data, following the mount(8) option names runc accepts.

use nix::mount::MsFlags;

/// What a spec mount's `options` mean for mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags set on the mount.
    pub flags: MsFlags,
    /// Propagation changes applied after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Options passed to the filesystem (e.g. `mode=755`, `size=65536k`).
    pub data: Vec<String>,
    /// Recursive attributes (`rro`, `rnosuid`, ...), applied to the mount and
    /// every mount under it with mount_setattr.
    pub recursive: RecursiveAttrs,
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// Flags that need a second, remounting mount(2) call after a bind mount
    /// (the kernel ignores them on the initial MS_BIND).
    pub fn bind_remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

/// Propagation option names; None when `name` is not one.
pub fn parse_propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// MOUNT_ATTR_* bits to set and to clear (mount_setattr's attr_set / attr_clr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecursiveAttrs {
    pub set: u64,
    pub clear: u64,
}

impl RecursiveAttrs {
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }

    fn apply(&mut self, clear: bool, attr: u64) {
        if attr & libc::MOUNT_ATTR__ATIME != 0 || attr == libc::MOUNT_ATTR_RELATIME {
            // The atime mode is one field: clear it whole, then set the new mode.
            self.clear |= libc::MOUNT_ATTR__ATIME;
            self.set = (self.set & !libc::MOUNT_ATTR__ATIME) | if clear { 0 } else { attr };
        } else if clear {
            self.set &= !attr;
            self.clear |= attr;
        } else {
            self.clear &= !attr;
            self.set |= attr;
        }
    }
}

/// (name, clears the attribute, MOUNT_ATTR_*)
const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, libc::MOUNT_ATTR_RDONLY),
    ("rrw", true, libc::MOUNT_ATTR_RDONLY),
    ("rnosuid", false, libc::MOUNT_ATTR_NOSUID),
    ("rsuid", true, libc::MOUNT_ATTR_NOSUID),
    ("rnodev", false, libc::MOUNT_ATTR_NODEV),
    ("rdev", true, libc::MOUNT_ATTR_NODEV),
    ("rnoexec", false, libc::MOUNT_ATTR_NOEXEC),
    ("rexec", true, libc::MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, libc::MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, libc::MOUNT_ATTR_NODIRATIME),
    ("rrelatime", false, libc::MOUNT_ATTR_RELATIME),
    ("rnorelatime", true, libc::MOUNT_ATTR_RELATIME),
    ("rnoatime", false, libc::MOUNT_ATTR_NOATIME),
    ("ratime", true, libc::MOUNT_ATTR_NOATIME),
    ("rstrictatime", false, libc::MOUNT_ATTR_STRICTATIME),
    ("rnostrictatime", true, libc::MOUNT_ATTR_STRICTATIME),
    ("rnosymfollow", false, libc::MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, libc::MOUNT_ATTR_NOSYMFOLLOW),
];

fn recursive_attr(name: &str) -> Option<(bool, u64)> {
    RECURSIVE_OPTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, clear, attr)| (*clear, *attr))
}

/// Not in nix's MsFlags (Linux 5.10+).
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// (name, clears the flag, flag)
const FLAG_OPTIONS: &[(&str, bool, MsFlags)] = &[
    ("acl", false, MsFlags::MS_POSIXACL),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("iversion", false, MsFlags::MS_I_VERSION),
    ("lazytime", false, MsFlags::MS_LAZYTIME),
    ("loud", true, MsFlags::MS_SILENT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noacl", true, MsFlags::MS_POSIXACL),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("noiversion", true, MsFlags::MS_I_VERSION),
    ("nolazytime", true, MsFlags::MS_LAZYTIME),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nosymfollow", false, MS_NOSYMFOLLOW),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("silent", false, MsFlags::MS_SILENT),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("symfollow", true, MS_NOSYMFOLLOW),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// Every option name understood (for `features`).
pub fn known_options() -> Vec<&'static str> {
    let mut names: Vec<&str> = FLAG_OPTIONS.iter().map(|(name, _, _)| *name).collect();
    names.extend([
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
        "tmpcopyup",
    ]);
    names.extend(RECURSIVE_OPTIONS.iter().map(|(name, _, _)| *name));
    names.sort_unstable();
    names
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        recursive: RecursiveAttrs::default(),
    };
    for option in options {
        if let Some((_, clear, flag)) = FLAG_OPTIONS.iter().find(|(name, _, _)| name == option) {
            if *clear {
                parsed.flags.remove(*flag);
            } else {
                parsed.flags.insert(*flag);
            }
        } else if let Some(propagation) = parse_propagation(option) {
            parsed.propagation.push(propagation);
        } else if let Some((clear, attr)) = recursive_attr(option) {
            parsed.recursive.apply(clear, attr);
        } else if option == "tmpcopyup"
            || option == "idmap"
            || option == "ridmap"
            || option.starts_with("x-")
        {
            // Userspace-only or not supported here; idmap/ridmap are read by
            // the idmapped mount setup (rootfs::idmap).
            tracing::debug!("mount option {option} ignored");
        } else {
            parsed.data.push(option.clone());
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_data_and_propagation_are_separated() {
        let parsed = opts(&[
            "nosuid",
            "noexec",
            "nodev",
            "mode=755",
            "size=65536k",
            "rslave",
            "ro",
        ]);
        assert_eq!(
            parsed.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(
            parsed.data_string().as_deref(),
            Some("mode=755,size=65536k")
        );
        assert_eq!(
            parsed.propagation,
            vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]
        );
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        let parsed = opts(&["rro", "rnosuid", "rnoatime"]);
        assert_eq!(
            parsed.recursive.set,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME
        );
        assert_eq!(parsed.recursive.clear, libc::MOUNT_ATTR__ATIME);
        let undone = opts(&["rro", "rrw"]);
        assert_eq!(
            (undone.recursive.set, undone.recursive.clear),
            (0, libc::MOUNT_ATTR_RDONLY)
        );
        assert!(opts(&["ro"]).recursive.is_empty());
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(opts(&["nosuid", "suid"]).flags, MsFlags::empty());
    }

    #[test]
    fn rbind_is_recursive_bind_and_needs_remount_for_ro() {
        let parsed = opts(&["rbind", "ro", "rprivate"]);
        assert!(parsed.is_bind());
        assert!(parsed.flags.contains(MsFlags::MS_REC));
        assert_eq!(parsed.bind_remount_flags(), MsFlags::MS_RDONLY);
        assert_eq!(
            parsed.propagation,
            vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]
        );
    }
}
