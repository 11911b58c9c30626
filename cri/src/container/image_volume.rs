//! Image volumes (KEP-4639, containerd 2.1): a CRI mount naming an image
//! instead of a host path mounts a read-only view of that (already pulled)
//! image's filesystem, or of a subdirectory of it, at `container_path`,
//! `nosuid`, `nodev` and `noexec`.
//!
//! Each such mount gets a read-only snapshot of the image, mounted under
//! the container's bundle; the container's mount is a bind of it. Both go
//! when the container is removed.

use std::path::{Component, Path, PathBuf};

use berth_proto::runtime::v1 as cri;

/// The snapshot of the `index`th mount of container `id`.
pub fn snapshot_id(id: &str, index: usize) -> String {
    format!("{id}-image-volume-{index}")
}

/// Where the `index`th mount's image is mounted on the host.
pub fn mount_dir(bundle: &Path, index: usize) -> PathBuf {
    bundle.join("image-volumes").join(index.to_string())
}

/// The image a mount names, if it is an image volume.
pub fn image_of(mount: &cri::Mount) -> Option<&str> {
    mount
        .image
        .as_ref()
        .map(|spec| spec.image.as_str())
        .filter(|name| !name.is_empty())
}

/// The host path of an image volume mounted at `dir`: the dir itself or
/// its `image_sub_path`, which must be relative, stay inside and exist.
pub fn host_path(index: usize, dir: &Path, mount: &cri::Mount) -> Result<PathBuf, String> {
    let field = format!("mounts[{index}].image_sub_path");
    let sub = Path::new(&mount.image_sub_path);
    if sub.as_os_str().is_empty() {
        return Ok(dir.to_path_buf());
    }
    if !sub
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{field}: {:?} must be relative, without \"..\"",
            mount.image_sub_path
        ));
    }
    let path = dir.join(sub);
    // Resolved in the image, symlinks included, it must stay in the image.
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("{field}: {:?} in the image: {e}", mount.image_sub_path))?;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("{field}: {}: {e}", dir.display()))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "{field}: {:?} leads out of the image",
            mount.image_sub_path
        ));
    }
    Ok(resolved)
}

/// The mount the container gets: a read-only bind of `host_path` (still
/// naming its image, so the spec adds nosuid, nodev and noexec).
pub fn as_bind(mount: &cri::Mount, host_path: &Path) -> cri::Mount {
    cri::Mount {
        host_path: host_path.display().to_string(),
        readonly: true,
        image_sub_path: String::new(),
        ..mount.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/data".into(),
            image: Some(cri::ImageSpec {
                image: "registry/data:1".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sub_paths_must_exist_and_stay_in_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/conf")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("escape")).unwrap();
        assert_eq!(host_path(0, dir.path(), &mount("")).unwrap(), dir.path());
        assert!(
            host_path(0, dir.path(), &mount("etc/conf"))
                .unwrap()
                .ends_with("etc/conf")
        );
        for bad in ["/etc", "../x", "etc/../../x", "missing", "escape"] {
            let err = host_path(2, dir.path(), &mount(bad)).unwrap_err();
            assert!(err.starts_with("mounts[2].image_sub_path"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_container_gets_a_read_only_bind() {
        let bind = as_bind(&mount("etc"), Path::new("/b/image-volumes/0/etc"));
        assert_eq!(bind.host_path, "/b/image-volumes/0/etc");
        assert!(bind.readonly);
        assert_eq!(image_of(&bind), Some("registry/data:1"));
        assert_eq!(bind.image_sub_path, "");
        assert_eq!(bind.container_path, "/data");
    }
}
