//! Seccomp filters: OCI `linux.seccomp` compiled to BPF in the parent, installed in the child.
