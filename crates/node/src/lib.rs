//! napi-rs binding of `opencode-k8s-core` for the Paperclip adapter package.
//!
//! Thin by design: typed `#[napi(object)]` structs are converted into core types ([`convert`]),
//! run events are forwarded to a JavaScript callback whose returned promise is awaited
//! ([`sink`]), and every failure reaches JavaScript as a value with a stable error code. Nothing
//! here may take down the host process (DESIGN.md §7a): every synchronous export catches
//! unwinding panics, and the engine runs in a spawned task whose panic becomes a failed outcome.

mod convert;
mod engine;
mod sink;

pub use convert::{
    CheckJs, ConfigFieldJs, EngineOptionsJs, ResumeDecisionJs, RunErrorJs, RunEventJs,
    RunOutcomeJs, RunRequestJs, RunResultJs, SessionJs, UsageJs,
};
pub use engine::{Engine, RunHandle, agent_home, config_fields, resume_decision, version};
