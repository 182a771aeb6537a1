//! `opencode-k8s`: the operator's command line over the engine.
fn main() {}
