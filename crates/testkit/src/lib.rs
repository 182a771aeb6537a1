//! # kube-sim — a TEST DOUBLE of a Kubernetes cluster
//!
//! This crate simulates a Kubernetes API server, Job controller, garbage collector, scheduler
//! and kubelet for the tests, benchmarks and offline demo of opencode-k8s. **It never schedules
//! real work**: it exists only so the engine can be exercised without a cluster. A pod's main
//! container runs as a local process on this machine; nothing is pulled, nothing is isolated
//! beyond a private mount namespace.
//!
//! Where the engine could tell it apart from a real cluster it behaves like one (kube-apiserver
//! v1.36, see `fixtures/kube/`): status codes, `Status` bodies, object shapes and
//! defaults, resourceVersion and watch semantics, Job conditions and events.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use opencode_k8s_testkit::{Cluster, ClusterOptions, Resource};
//! let cluster = Cluster::start(ClusterOptions::default()).await?;
//! cluster.seed_paperclip_pod("paperclip")?;
//! // point kube::Config at cluster.kubeconfig_path() ...
//! cluster.faults().fail_next(opencode_k8s_testkit::Verb::Get, "jobs", 2, 503);
//! let jobs = cluster.requests().get(opencode_k8s_testkit::Verb::Watch, "jobs");
//! # let _ = (jobs, Resource::Jobs); Ok(()) }
//! ```
//!
//! ## Served
//! namespaces, pods (+`log`), secrets, configmaps, persistentvolumeclaims, events, batch/v1
//! jobs, and `authorization.k8s.io/v1` selfsubjectaccessreviews; get, list, watch, create,
//! update, merge-patch (`application/merge-patch+json`; strategic merge patch is treated as a
//! merge patch; other patch types answer 415) and delete with `propagationPolicy`.
//! Watches replay from a resourceVersion (410 `Expired` as an ERROR event when older than the
//! retained history), send bookmarks (`allowWatchBookmarks`, and the `k8s.io/initial-events-end`
//! bookmark after `sendInitialEvents`), honour `timeoutSeconds`, and turn an object entering or
//! leaving the selectors into ADDED/DELETED. Field selectors accept any dotted path
//! (`metadata.name`, `involvedObject.uid`, `status.phase`, ...). Deleting a batch/v1 Job without a
//! `propagationPolicy` orphans its pods, as upstream does: pass `Background` or `Foreground`.
//! Not served: deletecollection, JSON patch, server-side apply, pagination (`limit` is ignored
//! and no `continue` token is returned). Only a pod's first container is run.
//!
//! ## Authentication
//! Bearer tokens: the admin token is in the kubeconfig; [`Cluster::add_user`] adds users with
//! [`Rule`]s. Unknown token → 401; a request no rule allows → 403 worded like RBAC.
//!
//! ## Control endpoint (for JS tests)
//! Under `/_testkit` on the same server, JSON bodies, no authentication (127.0.0.1 only):
//!
//! | method + path | body | effect |
//! |---|---|---|
//! | `GET /_testkit/requests` | | `{"verb resource": count}` |
//! | `POST /_testkit/requests/reset` | | zero the counters |
//! | `POST /_testkit/faults/fail` | `{"verb":"get","resource":"jobs","n":2,"code":503}` | next n matching requests fail |
//! | `POST /_testkit/faults/latency` | `{"ms":200}` | delay every API request |
//! | `POST /_testkit/faults/cut-logs` | `{"afterLines":3}` or `{"everyMs":500}` or `{}` | cut follow log streams |
//! | `POST /_testkit/faults/close-watches` | | end every open watch |
//! | `POST /_testkit/faults/refuse-connections` | `{"ms":1000}` | close the port for a while |
//! | `POST /_testkit/faults/log-error` | `{"n":1}` | next n log reads answer the kubelet's error text |
//! | `POST /_testkit/faults/forbid` | `{"ms":3000}` | 403 to every API request (authorizer warming up) |
//! | `POST /_testkit/faults/stream-lag` | `{"ms":3}` | stderr stamped this much before stdout (default 3) |
//! | `POST /_testkit/faults/job-finish-delay` | `{"ms":2000}` | target condition → `Complete`/`Failed` delay (real: ~2000; default 0) |
//! | `POST /_testkit/faults/unschedulable` | `{"pods":"job-name"}` | pods stay Unschedulable |
//! | `POST /_testkit/faults/image-pull` | `{"pattern":"does-not-exist"}` | ErrImagePull → ImagePullBackOff |
//! | `POST /_testkit/faults/script` | `{"pods":"*","output":"hi\n","outcome":{"exit":3}}` or `"outcome":"oom"` | replace the command |
//! | `POST /_testkit/faults/clear` | | remove every fault |
//! | `POST /_testkit/users` | `{"token":"t","name":"u","rules":[{"verbs":["get"],"group":"","resources":["pods"],"namespace":"ns"}]}` | add a user |
//!
//! `pods` selects `*`, a pod name, or a Job name. Request accounting counts each request under
//! its Kubernetes verb and resource (`pods/log` for logs); watch opens count as `watch`, follow
//! log opens as `follow`.

mod accounting;
mod agent_bin;
mod auth;
mod cluster;
mod control;
mod events;
mod faults;
mod gc;
mod jobs;
mod kubelet;
pub mod llm;
pub mod logs;
mod logs_api;
mod net;
mod objects;
mod podspec;
mod resource;
pub mod runtime;
mod seed;
mod selector;
mod server;
mod status;
mod store;
mod validate;
mod watch;

pub use accounting::RequestCounts;
pub use agent_bin::{AgentBin, TIMELINE, TIMELINE_AGENT, assert_each_ran_alone};
pub use auth::Rule;
pub use cluster::{Cluster, ClusterError, ClusterOptions, WaitError};
pub use faults::{Faults, Outcome, REAL_JOB_FINISH_DELAY, Script, UnknownVerb, Verb};
pub use llm::FakeLlm;
pub use logs::LogCut;
pub use resource::Resource;
pub use seed::{PaperclipSeed, Seed, SeedError, SeedRule, SeedUser, parse_seed};
pub use status::{ApiError, Cause};
