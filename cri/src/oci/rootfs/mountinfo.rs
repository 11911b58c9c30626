//! /proc/self/mountinfo parsing (for the cgroup mounts and locked mount flags).

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Path of this mount's root inside its filesystem.
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    pub super_options: String,
}

pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let mut rest = after.split(' ');
    let fs_type = rest.next()?;
    let _source = rest.next()?;
    Some(MountInfo {
        root: unescape(fields.get(3)?),
        mount_point: unescape(fields.get(4)?),
        fs_type: fs_type.to_string(),
        super_options: rest.next().unwrap_or_default().to_string(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v1 subsystems a cgroup mount's super options name (`rw,cpu,cpuacct` ->
/// `cpu,cpuacct`; named hierarchies keep their `name=` form).
pub fn cgroup_subsystems(super_options: &str) -> String {
    super_options
        .split(',')
        .filter(|o| {
            !matches!(*o, "rw" | "ro")
                && !o.starts_with("release_agent")
                && *o != "clone_children"
                && *o != "noprefix"
                && *o != "xattr"
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_lines_with_optional_fields() {
        let text = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 master:2 - cgroup cgroup rw,cpu,cpuacct\n\
                    31 25 0:27 /x\\040y /mnt/a\\040b rw - tmpfs tmpfs rw,size=10k\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(mounts[0].fs_type, "cgroup");
        assert_eq!(cgroup_subsystems(&mounts[0].super_options), "cpu,cpuacct");
        assert_eq!(mounts[1].root, "/x y");
        assert_eq!(mounts[1].mount_point, "/mnt/a b");
    }

    #[test]
    fn named_hierarchies_keep_their_name() {
        assert_eq!(cgroup_subsystems("rw,xattr,name=systemd"), "name=systemd");
    }
}
