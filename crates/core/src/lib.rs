//! The opencode-k8s engine.
//!
//! Pure parts — [`config`], [`manifest`], [`parse`], [`rbac`], [`resume`] — are deterministic functions with
//! no I/O: clocks and random suffixes are injected. The run lifecycle (added later) is the only
//! part that talks to a cluster.

pub mod config;
pub mod error_code;
pub mod event;
pub mod lifecycle;
pub mod manifest;
pub mod parse;
pub mod rbac;
pub mod resume;
