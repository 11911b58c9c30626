//! CNI 1.1.0 types, plugin skeleton and the bridge, host-local, loopback and portmap plugins.
