//! `kube-sim`: serve the simulated cluster (a test double).
fn main() {}
