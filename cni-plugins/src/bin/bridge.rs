//! The `bridge` CNI plugin.

fn main() {
    berth_cni::skel::run_main(&berth_cni::plugins::bridge::Bridge)
}
