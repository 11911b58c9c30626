//! The `portmap` CNI plugin.

fn main() {
    berth_cni::skel::run_main(&berth_cni::plugins::portmap::PortMap)
}
