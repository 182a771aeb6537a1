//! The opencode-k8s engine.
//!
//! Pure parts — [`config`], [`manifest`], [`parse`], [`rbac`], [`resume`] — are deterministic
//! functions with no I/O: clocks and random suffixes are injected. [`lifecycle`] (a run from
//! Lease to result, gc, doctor) is the only part that talks to a cluster. [`error_code`] holds
//! the stable codes every failure is reported under; [`event`] the one vocabulary of run events
//! the CLI prints and the addon forwards.

pub mod config;
pub mod error_code;
pub mod event;
pub mod lifecycle;
pub mod manifest;
pub mod parse;
pub mod rbac;
pub mod resume;
