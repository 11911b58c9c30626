//! Where an RPC's time goes: each phase's duration logged at debug level
//! (`RUST_LOG=berth_cri::server=debug`), e.g. to compare pod start-up with
//! containerd's phases.

use std::time::Instant;

pub(super) struct Phases {
    rpc: &'static str,
    began: Instant,
    last: Instant,
}

impl Phases {
    pub(super) fn begin(rpc: &'static str) -> Phases {
        let now = Instant::now();
        Phases {
            rpc,
            began: now,
            last: now,
        }
    }

    /// Logs the time since the previous phase (or the beginning) as `phase`.
    pub(super) fn done(&mut self, phase: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            rpc = self.rpc,
            phase,
            ms = (now - self.last).as_secs_f64() * 1000.0,
            total_ms = (now - self.began).as_secs_f64() * 1000.0,
            "phase done"
        );
        self.last = now;
    }
}
