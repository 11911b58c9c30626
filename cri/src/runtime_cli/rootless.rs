//! `--rootless`: runc's rootless mode. `true` or `false` as given; `auto` (or
//! no flag) means rootless when not running as root, or as root of a user
//! namespace (unless the systemd driver manages cgroups). Rootless mode skips
//! a cgroup the runtime is not allowed to create (see CreateOptions::rootless).

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rootless {
    Auto,
    True,
    False,
}

impl Rootless {
    pub fn resolve(flag: Option<Rootless>, systemd_cgroup: bool) -> bool {
        match flag.unwrap_or(Rootless::Auto) {
            Rootless::True => true,
            Rootless::False => false,
            Rootless::Auto => {
                !nix::unistd::geteuid().is_root() || (in_user_namespace() && !systemd_cgroup)
            }
        }
    }
}

/// Whether we run in a user namespace other than the initial one (whose
/// uid_map maps every id onto itself).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|map| !is_identity_map(&map))
        .unwrap_or(false)
}

fn is_identity_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_full_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0     100000      65536\n"));
        assert!(!is_identity_map("0 0 1\n"));
    }

    #[test]
    fn explicit_values_win() {
        assert!(Rootless::resolve(Some(Rootless::True), false));
        assert!(!Rootless::resolve(Some(Rootless::False), false));
    }
}
