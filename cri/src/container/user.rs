//! Resolving the user a container runs as: CRI's run_as_user/run_as_group/
//! run_as_username over the image's `User`, names looked up in the
//! container's own /etc/passwd and /etc/group, as runc and containerd do.

use std::path::Path;

/// uid, gid and the supplementary groups of the user in the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// (name, uid, gid) entries of an /etc/passwd file.
fn passwd(rootfs: &Path) -> Vec<(String, u32, u32)> {
    std::fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// (name, gid, members) entries of an /etc/group file.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    std::fs::read_to_string(rootfs.join("etc/group"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user` (`uid`, `name`, `uid:gid`, `name:group`, empty = root)
/// inside `rootfs`, with an explicit `gid` taking precedence.
pub fn resolve(rootfs: &Path, user: &str, gid: Option<u32>) -> Result<ResolvedUser, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries = passwd(rootfs);
    let (uid, name, mut primary) = if user_part.is_empty() {
        (0, Some("root".to_string()), 0)
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = entries.iter().find(|e| e.1 == uid);
        (uid, entry.map(|e| e.0.clone()), entry.map_or(0, |e| e.2))
    } else {
        let entry = entries
            .iter()
            .find(|e| e.0 == user_part)
            .ok_or_else(|| format!("no user {user_part:?} in the image's /etc/passwd"))?;
        (entry.1, Some(entry.0.clone()), entry.2)
    };
    let group_entries = groups(rootfs);
    if let Some(group) = group_part.filter(|g| !g.is_empty()) {
        primary = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|g| g.0 == group)
                .map(|g| g.1)
                .ok_or_else(|| format!("no group {group:?} in the image's /etc/group"))?,
        };
    }
    if let Some(gid) = gid {
        primary = gid;
    }
    let mut additional_gids: Vec<u32> = name
        .map(|name| {
            group_entries
                .iter()
                .filter(|g| g.2.contains(&name))
                .map(|g| g.1)
                .collect()
        })
        .unwrap_or_default();
    additional_gids.retain(|g| *g != primary);
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid: primary,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nlogs:x:40:www\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve_through_the_image_files() {
        let dir = rootfs();
        let www = resolve(dir.path(), "www", None).unwrap();
        assert_eq!((www.uid, www.gid, www.additional_gids), (33, 33, vec![40]));
        let numeric = resolve(dir.path(), "1000:2000", None).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1000, 2000));
        assert_eq!(resolve(dir.path(), "", None).unwrap().uid, 0);
        assert_eq!(resolve(dir.path(), "33", Some(7)).unwrap().gid, 7);
        let err = resolve(dir.path(), "nobody", None).unwrap_err();
        assert!(err.contains("nobody"), "{err}");
    }
}
