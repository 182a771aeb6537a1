//! The per-agent Lease (`coordination.k8s.io/v1`): the guard that one process at a time —
//! across Paperclip replicas, the CLI and the server — creates and follows an agent's Jobs.
//!
//! A run holds its agent's Lease from before it looks at the agent's Jobs until it has cleaned
//! up its last one. It is taken with create (409 AlreadyExists: someone else was first) or a
//! replace carrying the `resourceVersion` that was read (409 Conflict: someone else changed it
//! first), so two processes can never both hold it. The holder renews it every third of its
//! duration; a holder that dies stops renewing and the Lease expires, which is how the next run
//! knows a running Job is an orphan nobody follows. A Job whose Lease is live is followed by its
//! holder, and only that is worth waiting for.
//!
//! A Lease this engine released is taken again with one replace from the version the release
//! wrote (see [`RELEASED`]), so sequential runs of an agent cost two Lease writes and no read.
//!
//! Expiry compares the Lease's `renewTime` with this process's clock: the processes sharing an
//! agent run in one cluster, whose nodes keep their clocks in sync well within a lease duration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::retry::retry;
use crate::manifest::{AGENT_ID_KEY, MANAGED_BY_KEY, MANAGED_BY_VALUE, label_value};

const POST: PostParams = PostParams {
    dry_run: false,
    field_manager: None,
};

/// How many times one acquisition re-reads the Lease after losing a race (a 409) before giving
/// up for now and waiting like a run that found it held.
const RACES: u32 = 3;

/// Who holds a Lease: the process (host, pid, engine instance) and the run.
pub(crate) fn identity(process: &str, run_id: &str) -> String {
    format!("{process}/{run_id}")
}

/// This process, as a Lease holder names it: `<host>/<pid>.<engine instance>`. In a pod the host
/// is the pod's name.
pub(crate) fn process_identity(instance: u64) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}/{}.{instance}", std::process::id())
}

/// What one acquisition found.
pub(crate) enum Acquired {
    /// This run holds the Lease now.
    Held(Box<AgentLease>),
    /// Another live holder has it.
    Busy {
        /// Its holder identity.
        holder: String,
        /// How long until it expires unless renewed.
        expires_in: Duration,
    },
}

/// The agent's Lease, held by this run: renewed in the background until released or dropped.
/// Dropping it without [`AgentLease::release`] (a process dying) stops renewing, so it expires.
pub(crate) struct AgentLease {
    api: Api<Lease>,
    name: String,
    holder: String,
    /// The Lease as this holder last wrote it (what a release replaces).
    current: Arc<Mutex<Lease>>,
    /// Fires when the renewals found another holder: someone else follows the agent now.
    lost: CancellationToken,
    renewer: JoinHandle<()>,
}

impl Drop for AgentLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// How long a held Lease stays live unless renewed; `None` for one released or expired.
pub(super) fn expiry(lease: &Lease, now: Timestamp) -> Option<Duration> {
    // A released Lease (no holder) is free whatever its times say.
    holder_of(lease).filter(|h| !h.is_empty())?;
    let renewed = renewed_at(lease)?;
    let seconds = lease.spec.as_ref()?.lease_duration_seconds.unwrap_or(0);
    let left = renewed
        .checked_add(SignedDuration::from_secs(seconds.into()))
        .ok()?
        .duration_since(now);
    Duration::try_from(left).ok().filter(|left| !left.is_zero())
}

/// When a holder last wrote the Lease: its renewal, else its acquisition.
pub(super) fn renewed_at(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
}

pub(super) fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// The spec of a Lease `holder` takes (or renews) at `now`, held since `acquired`.
fn spec(
    holder: &str,
    duration: Duration,
    transitions: i32,
    acquired: Timestamp,
    now: Timestamp,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

fn conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// The Lease is not there (any more): `gc` deletes the ones nobody has held for a while.
fn gone(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// The Leases this process released, as the release wrote them, by (engine, Lease URL): the next
/// run of the agent through the same engine takes it with one replace from that version instead
/// of a read and a replace. The version is the guard: anyone who wrote the Lease since makes the
/// replace fail (409), and the run reads it as usual.
static RELEASED: Mutex<BTreeMap<(String, String), Lease>> = Mutex::new(BTreeMap::new());

/// The key of [`RELEASED`]: the engine part of `holder` and the Lease's URL.
fn released_key(api: &Api<Lease>, name: &str, holder: &str) -> (String, String) {
    let process = holder
        .rsplit_once('/')
        .map_or(holder, |(process, _)| process);
    (process.to_owned(), format!("{}/{name}", api.resource_url()))
}

/// Try to take agent `agent_id`'s Lease `name` for `holder`, valid for `duration`.
pub(crate) async fn acquire(
    api: &Api<Lease>,
    name: &str,
    agent_id: &str,
    holder: &str,
    duration: Duration,
) -> Result<Acquired, kube::Error> {
    let claimant = Claimant {
        name,
        agent_id,
        holder,
        duration,
    };
    if let Some(held) = claimant.retake_released(api).await {
        return Ok(held);
    }
    let mut races = 0;
    loop {
        let current = retry("get the agent's Lease", || api.get_opt(name)).await?;
        let (written, replacing) = match claimant.claim(current, Timestamp::now()) {
            Claim::Create(lease) => (
                retry("create the agent's Lease", || api.create(&POST, &lease)).await,
                false,
            ),
            Claim::Replace(lease) => (
                retry("take over the agent's Lease", || {
                    api.replace(name, &POST, &lease)
                })
                .await,
                true,
            ),
            Claim::Busy { holder, expires_in } => {
                return Ok(Acquired::Busy { holder, expires_in });
            }
        };
        // Someone else wrote the Lease first (409), or gc deleted the free Lease just read (404
        // on the replace): read it again.
        let raced = |err: &kube::Error| conflict(err) || (replacing && gone(err));
        match written {
            Ok(lease) => return Ok(claimant.held(api, lease)),
            Err(err) if raced(&err) && races < RACES => races += 1,
            Err(err) if raced(&err) => {
                return Ok(Acquired::Busy {
                    holder: "another process that just took it".to_owned(),
                    expires_in: duration,
                });
            }
            Err(err) => return Err(err),
        }
    }
}

/// Who asks for which agent's Lease, for how long: what [`acquire`] was asked for.
struct Claimant<'a> {
    name: &'a str,
    agent_id: &'a str,
    holder: &'a str,
    duration: Duration,
}

/// What to write, having read the Lease.
#[derive(Debug)]
enum Claim {
    /// There is none: create this one.
    Create(Lease),
    /// Free, expired or this holder's own: replace it with this (the read's version guards it).
    Replace(Lease),
    /// Another live holder has it, for `expires_in` unless renewed.
    Busy {
        holder: String,
        expires_in: Duration,
    },
}

impl Claimant<'_> {
    /// The Lease this engine released, taken again with one replace from the version the release
    /// wrote; `None` when there is none, or it changed since (then it is read as usual).
    async fn retake_released(&self, api: &Api<Lease>) -> Option<Acquired> {
        let key = released_key(api, self.name, self.holder);
        let mut taken = super::lock(&RELEASED).remove(&key)?;
        let transitions = taken
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_transitions)
            .unwrap_or(0);
        let now = Timestamp::now();
        taken.spec = Some(spec(self.holder, self.duration, transitions, now, now));
        match api.replace(self.name, &POST, &taken).await {
            Ok(lease) => Some(self.held(api, lease)),
            // Changed since this engine released it, or any other failure: read it as usual.
            Err(err) => {
                tracing::debug!(lease = %self.name, error = %err, "the Lease changed since this engine released it");
                None
            }
        }
    }

    /// What to write at `now`, given the Lease as read (`None`: it does not exist).
    fn claim(&self, current: Option<Lease>, now: Timestamp) -> Claim {
        let Some(mut lease) = current else {
            return Claim::Create(self.new_lease(now));
        };
        let held_by = holder_of(&lease).unwrap_or_default().to_owned();
        let own = held_by == self.holder;
        if let Some(expires_in) = expiry(&lease, now).filter(|_| !own) {
            return Claim::Busy {
                holder: held_by,
                expires_in,
            };
        }
        let previous = lease.spec.take().unwrap_or_default();
        // A transition is a change of holder; taking a released Lease back is none.
        let transitions =
            previous.lease_transitions.unwrap_or(0) + i32::from(!own && !held_by.is_empty());
        let acquired = match previous.acquire_time {
            Some(at) if own => at.0,
            _ => now,
        };
        lease.spec = Some(spec(self.holder, self.duration, transitions, acquired, now));
        Claim::Replace(lease)
    }

    /// A new Lease for the agent, held by this holder from `now`.
    fn new_lease(&self, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.to_owned()),
                labels: Some(
                    [
                        (MANAGED_BY_KEY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                        (AGENT_ID_KEY.to_owned(), label_value(self.agent_id)),
                    ]
                    .into(),
                ),
                annotations: Some([(AGENT_ID_KEY.to_owned(), self.agent_id.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(spec(self.holder, self.duration, 0, now, now)),
        }
    }

    /// The Lease as written: held by this run, renewed from now on.
    fn held(&self, api: &Api<Lease>, lease: Lease) -> Acquired {
        Acquired::Held(Box::new(AgentLease::hold(
            api.clone(),
            self.name,
            self.holder,
            lease,
            self.duration,
        )))
    }
}

impl AgentLease {
    fn hold(api: Api<Lease>, name: &str, holder: &str, lease: Lease, duration: Duration) -> Self {
        let lost = CancellationToken::new();
        let current = Arc::new(Mutex::new(lease));
        let renewer = tokio::spawn(renew(
            api.clone(),
            name.to_owned(),
            holder.to_owned(),
            current.clone(),
            duration,
            lost.clone(),
        ));
        Self {
            api,
            name: name.to_owned(),
            holder: holder.to_owned(),
            current,
            lost,
            renewer,
        }
    }

    /// Resolves when another holder took the Lease (this process stalled past its expiry).
    pub(crate) async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Stop renewing and hand the Lease back (one replace from the version this holder last
    /// wrote), so the next run need not wait for it to expire. A Lease someone else took
    /// meanwhile (409) is left alone.
    pub(crate) async fn release(self: Box<Self>) {
        self.renewer.abort();
        if self.lost.is_cancelled() {
            return;
        }
        let mut lease = super::lock(&self.current).clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match retry("release the agent's Lease", || {
            self.api.replace(&self.name, &POST, &lease)
        })
        .await
        {
            Ok(released) => {
                super::lock(&RELEASED)
                    .insert(released_key(&self.api, &self.name, &self.holder), released);
            }
            Err(err) if conflict(&err) || gone(&err) => {}
            Err(err) => {
                tracing::warn!(lease = %self.name, holder = %self.holder, error = %err, "could not release the agent's Lease; it expires instead");
            }
        }
    }
}

/// Renew every third of `duration` until aborted; a 409 whose re-read shows another holder, or
/// a 404, means the Lease was lost.
async fn renew(
    api: Api<Lease>,
    name: String,
    holder: String,
    current: Arc<Mutex<Lease>>,
    duration: Duration,
    lost: CancellationToken,
) {
    let period = duration / 3;
    loop {
        tokio::time::sleep(period).await;
        let mut lease = super::lock(&current).clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let written = retry("renew the agent's Lease", || {
            api.replace(&name, &POST, &lease)
        })
        .await;
        match written {
            Ok(renewed) => *super::lock(&current) = renewed,
            // Only a Lease nobody held for gc's bound is deleted: this holder stalled that long.
            Err(err) if gone(&err) => {
                tracing::warn!(lease = %name, %holder, "the agent's Lease was deleted while this process did not renew it");
                lost.cancel();
                return;
            }
            Err(err) if conflict(&err) => match api.get_opt(&name).await {
                Ok(Some(now)) if holder_of(&now) == Some(holder.as_str()) => {
                    *super::lock(&current) = now;
                }
                Ok(_) => {
                    tracing::warn!(lease = %name, %holder, "the agent's Lease was taken over by another process");
                    lost.cancel();
                    return;
                }
                Err(err) => {
                    tracing::warn!(lease = %name, error = %err, "could not read the agent's Lease after a conflict");
                }
            },
            Err(err) => {
                tracing::warn!(lease = %name, error = %err, "could not renew the agent's Lease; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "oc-agent-x"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "renewTime": renewed},
        }))
        .unwrap()
    }

    #[test]
    fn a_lease_is_live_until_its_duration_after_the_last_renewal() {
        let now: Timestamp = "2026-12-03T12:00:30Z".parse().unwrap();
        assert_eq!(
            expiry(&lease(Some("a"), "2026-12-03T12:00:10.000000Z", 30), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            expiry(&lease(Some("a"), "2026-12-03T11:59:00.000000Z", 30), now),
            None,
            "expired"
        );
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let now: Timestamp = "2026-12-03T12:00:30Z".parse().unwrap();
        assert_eq!(
            expiry(&lease(None, "2026-12-03T12:00:29.000000Z", 30), now),
            None
        );
    }

    const NOW: &str = "2026-12-03T12:00:30Z";

    fn claimant(holder: &str) -> Claimant<'_> {
        Claimant {
            name: "oc-agent-x",
            agent_id: "agent x",
            holder,
            duration: Duration::from_secs(30),
        }
    }

    fn replaced(claim: Claim) -> LeaseSpec {
        match claim {
            Claim::Replace(lease) => lease.spec.unwrap(),
            other => panic!("expected a replace, got {other:?}"),
        }
    }

    #[test]
    fn a_live_lease_of_another_holder_is_busy() {
        let claim = claimant("b").claim(
            Some(lease(Some("a"), "2026-12-03T12:00:10.000000Z", 30)),
            NOW.parse().unwrap(),
        );
        assert!(
            matches!(&claim, Claim::Busy { holder, expires_in } if holder == "a" && expires_in.as_secs() == 10),
            "{claim:?}"
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_as_a_transition() {
        let now: Timestamp = NOW.parse().unwrap();
        let spec = replaced(claimant("b").claim(
            Some(lease(Some("a"), "2026-12-03T11:59:00.000000Z", 30)),
            now,
        ));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time.map(|t| t.0), Some(now));
    }

    #[test]
    fn a_released_lease_is_taken_without_a_transition() {
        let spec = replaced(claimant("b").claim(
            Some(lease(None, "2026-12-03T12:00:29.000000Z", 30)),
            NOW.parse().unwrap(),
        ));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn the_holders_own_lease_keeps_its_acquire_time() {
        let mut own = lease(Some("b"), "2026-12-03T12:00:10.000000Z", 30);
        let acquired: Timestamp = "2026-12-03T11:00:00Z".parse().unwrap();
        own.spec.as_mut().unwrap().acquire_time = Some(MicroTime(acquired));
        let spec = replaced(claimant("b").claim(Some(own), NOW.parse().unwrap()));
        assert_eq!(spec.acquire_time.map(|t| t.0), Some(acquired));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn a_missing_lease_is_created_labelled_for_its_agent() {
        let Claim::Create(lease) = claimant("b").claim(None, NOW.parse().unwrap()) else {
            panic!("expected a create");
        };
        let labels = lease.metadata.labels.unwrap();
        assert_eq!(labels[MANAGED_BY_KEY], MANAGED_BY_VALUE);
        assert_eq!(labels[AGENT_ID_KEY], label_value("agent x"));
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("b"));
    }
}
