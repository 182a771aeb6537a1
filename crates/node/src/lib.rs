//! napi-rs binding of `opencode-k8s-core` for the Paperclip adapter package. Filled in by the adapter-package work; it holds no logic of its own.
