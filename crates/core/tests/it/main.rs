//! Integration tests of opencode-k8s-core, one binary with a module per area.

mod config;
mod docs;
mod e2e;
mod lifecycle;
mod manifest;
mod parse;
mod properties;
mod rbac;
mod resume;
