//! berth-kubelet node agent.
