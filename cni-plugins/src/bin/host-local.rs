//! The `host-local` CNI plugin.

fn main() {
    berth_cni::skel::run_main(&berth_cni::plugins::host_local::HostLocal)
}
