//! The `loopback` CNI plugin.

fn main() {
    berth_cni::skel::run_main(&berth_cni::plugins::loopback::Loopback)
}
