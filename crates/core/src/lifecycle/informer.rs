//! Shared watches: one watch each of the engine's Jobs, their pods and the namespace's Events
//! per (cluster, namespace), fanned out to the runs that care. API requests per run stay
//! constant however many runs are in flight and however long they last; nothing polls.
//!
//! The watches start with the first run in a namespace and stop a linger period after the last
//! one ended (see the engine's `WATCH_LINGER`), so sequential runs share them too.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::manifest::{MANAGED_BY_KEY, MANAGED_BY_VALUE};

/// Server-side timeout of each watch call. kube-runtime's watcher treats a watch that stays
/// silent 5 s longer than this as a dead connection and reconnects (resuming from its last
/// resourceVersion, re-listing only on 410), so a connection that died without a FIN — a node or
/// a NAT dropping it — is noticed within 55 s instead of stalling completion detection for the
/// watch's whole timeout. The price: each of the three watches is reopened every 50 s.
pub(crate) const WATCH_TIMEOUT_SECS: u32 = 50;
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// A change to one run's objects.
#[derive(Debug, Clone)]
pub(crate) enum Update {
    Job(Arc<Job>),
    JobGone,
    Pod(Arc<Pod>),
    PodGone(String),
    Event(Arc<Event>),
}

#[derive(Debug, Default)]
struct Shared {
    /// Per Job name, every subscriber (a run following it, runs waiting for it) by id.
    subscribers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<Update>)>>,
    next_id: u64,
    jobs: HashMap<String, Arc<Job>>,
    pods: HashMap<String, Arc<Pod>>,
}

impl Shared {
    fn send(&self, job: &str, update: Update) {
        for (_, tx) in self.subscribers.get(job).into_iter().flatten() {
            // A closed receiver is a run that just ended; its guard removes it.
            let _ = tx.send(update.clone());
        }
    }
}

/// The shared watches of one namespace. Dropping the last handle stops them; [`Self::stop`]
/// also waits until they have.
pub(crate) struct NamespaceWatch {
    shared: Arc<Mutex<Shared>>,
    tasks: JoinSet<()>,
}

impl fmt::Debug for NamespaceWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamespaceWatch").finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NamespaceWatch {
    /// Start watching `namespace`.
    pub(crate) fn start(client: &kube::Client, namespace: &str) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let managed = format!("{MANAGED_BY_KEY}={MANAGED_BY_VALUE}");
        let config = watcher::Config::default()
            .labels(&managed)
            .timeout(WATCH_TIMEOUT_SECS);
        let mut tasks = JoinSet::new();
        tasks.spawn(watch_cached::<Job>(
            Api::namespaced(client.clone(), namespace),
            config.clone(),
            shared.clone(),
        ));
        tasks.spawn(watch_cached::<Pod>(
            Api::namespaced(client.clone(), namespace),
            config,
            shared.clone(),
        ));
        let events = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        tasks.spawn(watch_events(
            Api::namespaced(client.clone(), namespace),
            events,
            shared.clone(),
        ));
        Self { shared, tasks }
    }

    /// Stop the watches and wait until they have: none of them reports anything afterwards,
    /// not even the connections a process exit closes under them.
    pub(crate) async fn stop(mut self) {
        self.tasks.shutdown().await;
    }

    /// Receive every change to Job `job`, its pods and their Events, starting with what is
    /// already known about them.
    pub(crate) fn subscribe(&self, job: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = lock(&self.shared);
        if let Some(current) = shared.jobs.get(job) {
            let _ = tx.send(Update::Job(current.clone()));
        }
        for pod in shared.pods.values().filter(|pod| pod_job(pod) == Some(job)) {
            let _ = tx.send(Update::Pod(pod.clone()));
        }
        shared.next_id += 1;
        let id = shared.next_id;
        shared
            .subscribers
            .entry(job.to_owned())
            .or_default()
            .push((id, tx));
        Subscription {
            rx,
            job: job.to_owned(),
            id,
            shared: self.shared.clone(),
        }
    }
}

/// One run's view of the shared watches; unsubscribes on drop.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: mpsc::UnboundedReceiver<Update>,
    job: String,
    id: u64,
    shared: Arc<Mutex<Shared>>,
}

impl Subscription {
    /// The next change; `None` only if the watches stopped.
    pub(crate) async fn recv(&mut self) -> Option<Update> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(subscribers) = shared.subscribers.get_mut(&self.job) {
            subscribers.retain(|(id, _)| *id != self.id);
            if subscribers.is_empty() {
                shared.subscribers.remove(&self.job);
            }
        }
    }
}

fn pod_job(pod: &Pod) -> Option<&str> {
    let labels = pod.metadata.labels.as_ref()?;
    labels
        .get(JOB_NAME_LABEL)
        .or_else(|| labels.get(LEGACY_JOB_NAME_LABEL))
        .map(String::as_str)
}

/// Tracks the names seen during a re-list, so objects deleted while the watch was down are
/// reported gone (the watcher only reports deletions it saw).
#[derive(Default)]
struct Relist(Option<HashSet<String>>);

impl Relist {
    fn start(&mut self) {
        self.0 = Some(HashSet::new());
    }

    fn saw(&mut self, name: &str) {
        if let Some(seen) = &mut self.0 {
            seen.insert(name.to_owned());
        }
    }

    /// Names in `known` that the finished re-list did not return.
    fn finish<V>(&mut self, known: &HashMap<String, V>) -> Vec<String> {
        let Some(seen) = self.0.take() else {
            return Vec::new();
        };
        known
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect()
    }
}

/// A kind the shared watches cache by name and fan out to the runs of its Job.
trait Cached:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind as the warnings name it.
    const WATCH: &'static str;
    /// Its cache in the shared state.
    fn cache(shared: &mut Shared) -> &mut HashMap<String, Arc<Self>>;
    /// The Job whose runs care about it.
    fn job(&self) -> Option<&str>;
    /// The update a change to it sends.
    fn changed(this: &Arc<Self>) -> Update;
    /// The update its deletion sends.
    fn gone(name: String) -> Update;
}

impl Cached for Job {
    const WATCH: &'static str = "job";

    fn cache(shared: &mut Shared) -> &mut HashMap<String, Arc<Self>> {
        &mut shared.jobs
    }

    fn job(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }

    fn changed(this: &Arc<Self>) -> Update {
        Update::Job(this.clone())
    }

    fn gone(_: String) -> Update {
        Update::JobGone
    }
}

impl Cached for Pod {
    const WATCH: &'static str = "pod";

    fn cache(shared: &mut Shared) -> &mut HashMap<String, Arc<Self>> {
        &mut shared.pods
    }

    fn job(&self) -> Option<&str> {
        pod_job(self)
    }

    fn changed(this: &Arc<Self>) -> Update {
        Update::Pod(this.clone())
    }

    fn gone(name: String) -> Update {
        Update::PodGone(name)
    }
}

/// Keep the cache of `K` current and tell the runs of each object's Job what changed. After a
/// re-list (a watch that could not resume), what the list no longer holds is gone.
async fn watch_cached<K: Cached>(api: Api<K>, config: watcher::Config, shared: Arc<Mutex<Shared>>) {
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut relist = Relist::default();
    while let Some(event) = stream.next().await {
        let mut guard = lock(&shared);
        let shared = &mut *guard;
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let name = object.meta().name.clone().unwrap_or_default();
                relist.saw(&name);
                let object = Arc::new(object);
                if let Some(job) = object.job() {
                    shared.send(job, K::changed(&object));
                }
                K::cache(shared).insert(name, object);
            }
            Ok(watcher::Event::Delete(object)) => {
                let name = object.meta().name.clone().unwrap_or_default();
                K::cache(shared).remove(&name);
                if let Some(job) = object.job() {
                    shared.send(job, K::gone(name));
                }
            }
            Ok(watcher::Event::Init) => relist.start(),
            Ok(watcher::Event::InitDone) => {
                for name in relist.finish(K::cache(shared)) {
                    if let Some(object) = K::cache(shared).remove(&name)
                        && let Some(job) = object.job()
                    {
                        shared.send(job, K::gone(name));
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "{} watch interrupted; retrying", K::WATCH),
        }
    }
}

async fn watch_events(api: Api<Event>, config: watcher::Config, shared: Arc<Mutex<Shared>>) {
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(event) | watcher::Event::InitApply(event)) => {
                let shared = lock(&shared);
                if let Some(job) = event_job(&shared, &event) {
                    shared.send(&job, Update::Event(Arc::new(event)));
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "event watch interrupted; retrying"),
        }
    }
}

/// The Job an Event is about: the Job itself, or one of its pods (known from the pod watch, or
/// by its `<job>-<suffix>` name when the Event outran the pod).
fn event_job(shared: &Shared, event: &Event) -> Option<String> {
    let object = &event.involved_object;
    let name = object.name.as_deref()?;
    match object.kind.as_deref()? {
        "Job" => shared
            .subscribers
            .contains_key(name)
            .then(|| name.to_owned()),
        "Pod" => match shared.pods.get(name) {
            Some(pod) => pod_job(pod).map(str::to_owned),
            None => name
                .rsplit_once('-')
                .map(|(job, _)| job)
                .filter(|job| shared.subscribers.contains_key(*job))
                .map(str::to_owned),
        },
        _ => None,
    }
}
