//! TEST DOUBLE — a simulated Kubernetes cluster. Never schedules real work.

pub mod logs;
pub mod runtime;
