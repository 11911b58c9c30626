//! End-to-end tests, shared fixtures and benchmarks.
pub mod apiserver;
