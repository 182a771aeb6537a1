//! The object store: every object as JSON (so every field a client sends is kept, like etcd
//! behind a real server), one global monotonic resourceVersion, a bounded per-resource history
//! of changes for watch-from-resourceVersion, an ownerReference index for garbage collection,
//! and fan-out of changes to watchers (broadcast) and controllers (unbounded, lossless).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::resource::Resource;
use crate::status::ApiError;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed from the store.
    Deleted,
}

impl ChangeKind {
    /// The watch event `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as watchers and controllers see it.
#[derive(Debug)]
pub(crate) struct Change {
    /// The resource type of the object.
    pub(crate) resource: Resource,
    /// What happened.
    pub(crate) kind: ChangeKind,
    /// The object after the change (the last state for a delete).
    pub(crate) object: Arc<Value>,
    /// The resourceVersion of this change.
    pub(crate) rv: u64,
    /// The watch event line (`{"type":...,"object":...}\n`), serialized once for every watcher.
    pub(crate) line: Bytes,
    /// The object before a modification, so watchers can tell an object entering or leaving
    /// their selector.
    pub(crate) previous: Option<Arc<Value>>,
}

/// The next change a controller reacts to; `None` once `cancel` fires or the store is gone.
pub(crate) async fn next_change(
    changes: &mut mpsc::UnboundedReceiver<Arc<Change>>,
    cancel: &CancellationToken,
) -> Option<Arc<Change>> {
    tokio::select! {
        () = cancel.cancelled() => None,
        change = changes.recv() => change,
    }
}

/// Where a watch starts.
#[derive(Debug)]
pub(crate) enum WatchStart {
    /// `resourceVersion` unset or `0`: the current objects (as synthetic ADDED), then changes.
    Snapshot(Vec<Arc<Value>>),
    /// A concrete `resourceVersion`: every retained change after it, then live changes.
    Replay(Vec<Arc<Change>>),
}

struct Table {
    objects: BTreeMap<(String, String), Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    /// Every change with a resourceVersion at or below this was dropped from `history`.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

struct Inner {
    rv: u64,
    tables: HashMap<Resource, Table>,
    /// owner uid → dependents, for garbage collection without scanning.
    dependents: HashMap<String, BTreeSet<(Resource, String, String)>>,
    controllers: Vec<mpsc::UnboundedSender<Arc<Change>>>,
}

/// The store shared by the API server and the controllers.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    history_limit: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("history_limit", &self.history_limit)
            .finish_non_exhaustive()
    }
}

fn key(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["uid"].as_str().map(str::to_owned))
        .collect()
}

impl Store {
    /// An empty store keeping `history_limit` changes per resource for watches.
    pub(crate) fn new(history_limit: usize) -> Store {
        let tables = Resource::ALL
            .into_iter()
            .map(|r| {
                let (tx, _) = broadcast::channel(4096);
                let table = Table {
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    compacted: 0,
                    tx,
                };
                (r, table)
            })
            .collect();
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                tables,
                dependents: HashMap::new(),
                controllers: Vec::new(),
            }),
            history_limit: history_limit.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation is applied
        // before fan-out), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest resourceVersion.
    pub(crate) fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// A lossless feed of every change, for controllers.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().controllers.push(tx);
        rx
    }

    /// One object.
    pub(crate) fn get(&self, resource: Resource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock().tables[&resource]
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Objects in `ns` (all namespaces when `None`) accepted by `keep`, and the list's
    /// resourceVersion.
    pub(crate) fn list(
        &self,
        resource: Resource,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let objects = &inner.tables[&resource].objects;
        let items = match ns {
            Some(ns) => objects
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .filter(|v| keep(v))
                .cloned()
                .collect(),
            None => objects.values().filter(|v| keep(v)).cloned().collect(),
        };
        (items, inner.rv)
    }

    /// Dependents of the object with `owner_uid` (by ownerReferences).
    pub(crate) fn dependents(&self, owner_uid: &str) -> Vec<(Resource, String, String)> {
        self.lock()
            .dependents
            .get(owner_uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn index(inner: &mut Inner, resource: Resource, old: Option<&Value>, new: Option<&Value>) {
        let (old_owners, new_owners) = (
            old.map(owner_uids).unwrap_or_default(),
            new.map(owner_uids).unwrap_or_default(),
        );
        let entry = old.or(new).map(key).unwrap_or_default();
        for uid in old_owners.iter().filter(|u| !new_owners.contains(u)) {
            if let Some(set) = inner.dependents.get_mut(uid) {
                set.remove(&(resource, entry.0.clone(), entry.1.clone()));
                if set.is_empty() {
                    inner.dependents.remove(uid);
                }
            }
        }
        for uid in new_owners {
            inner.dependents.entry(uid).or_default().insert((
                resource,
                entry.0.clone(),
                entry.1.clone(),
            ));
        }
    }

    fn publish(
        &self,
        inner: &mut Inner,
        resource: Resource,
        kind: ChangeKind,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let rv = inner.rv;
        let line = serde_json::to_vec(&json!({"type": kind.as_str(), "object": &*object}))
            .map(|mut v| {
                v.push(b'\n');
                Bytes::from(v)
            })
            .unwrap_or_default();
        let change = Arc::new(Change {
            resource,
            kind,
            object,
            rv,
            line,
            previous,
        });
        inner
            .controllers
            .retain(|tx| tx.send(change.clone()).is_ok());
        let table = inner
            .tables
            .get_mut(&resource)
            .expect("every resource has a table");
        table.history.push_back(change.clone());
        while table.history.len() > self.history_limit {
            if let Some(old) = table.history.pop_front() {
                table.compacted = old.rv;
            }
        }
        // No receivers is normal (nobody watching).
        let _ = table.tx.send(change);
    }

    /// Stores a new object, stamping its resourceVersion.
    pub(crate) fn create(
        &self,
        resource: Resource,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let k = key(&obj);
        if inner.tables[&resource].objects.contains_key(&k) {
            return Err(ApiError::already_exists(resource, &k.1));
        }
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let obj = Arc::new(obj);
        Self::index(&mut inner, resource, None, Some(&obj));
        inner
            .tables
            .get_mut(&resource)
            .expect("every resource has a table")
            .objects
            .insert(k, obj.clone());
        self.publish(&mut inner, resource, ChangeKind::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Applies `f` to an object; stores and publishes it when it changed.
    pub(crate) fn update(
        &self,
        resource: Resource,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let k = (ns.to_owned(), name.to_owned());
        let Some(old) = inner.tables[&resource].objects.get(&k).cloned() else {
            return Err(ApiError::not_found(resource, name));
        };
        let mut new = (*old).clone();
        f(&mut new)?;
        // Identity is immutable, whatever the closure (or a client's patch) did.
        new["metadata"]["name"] = old["metadata"]["name"].clone();
        new["metadata"]["namespace"] = old["metadata"]["namespace"].clone();
        new["metadata"]["uid"] = old["metadata"]["uid"].clone();
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == *old {
            return Ok(old);
        }
        if resource.has_generation() && new["spec"] != old["spec"] {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        inner.rv += 1;
        new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let new = Arc::new(new);
        Self::index(&mut inner, resource, Some(&old), Some(&new));
        inner
            .tables
            .get_mut(&resource)
            .expect("every resource has a table")
            .objects
            .insert(k, new.clone());
        self.publish(
            &mut inner,
            resource,
            ChangeKind::Modified,
            new.clone(),
            Some(old),
        );
        Ok(new)
    }

    /// Removes an object; the DELETED change carries its last state at a new resourceVersion.
    pub(crate) fn remove(&self, resource: Resource, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.remove_if(resource, ns, name, |_| Ok(()))
            .ok()
            .flatten()
    }

    /// Like [`Store::remove`], when `check` accepts the object as stored (under the same lock, as
    /// the API server checks a delete's preconditions); `Ok(None)` when there is none.
    pub(crate) fn remove_if(
        &self,
        resource: Resource,
        ns: &str,
        name: &str,
        check: impl FnOnce(&Value) -> Result<(), ApiError>,
    ) -> Result<Option<Arc<Value>>, ApiError> {
        let mut inner = self.lock();
        let table = &mut inner
            .tables
            .get_mut(&resource)
            .expect("every resource has a table")
            .objects;
        let key = (ns.to_owned(), name.to_owned());
        let Some(current) = table.get(&key) else {
            return Ok(None);
        };
        check(current)?;
        let old = table.remove(&key).expect("just looked up");
        Self::index(&mut inner, resource, Some(&old), None);
        inner.rv += 1;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let last = Arc::new(last);
        self.publish(
            &mut inner,
            resource,
            ChangeKind::Deleted,
            last.clone(),
            None,
        );
        Ok(Some(last))
    }

    /// Starts a watch: the initial events and a receiver of later changes, taken under one lock
    /// so nothing is missed or doubled. 410 when `from` is older than the retained history.
    pub(crate) fn watch(
        &self,
        resource: Resource,
        from: Option<u64>,
    ) -> Result<(WatchStart, broadcast::Receiver<Arc<Change>>, u64), ApiError> {
        let inner = self.lock();
        let table = &inner.tables[&resource];
        let start = match from {
            None | Some(0) => WatchStart::Snapshot(table.objects.values().cloned().collect()),
            Some(rv) if rv < table.compacted => {
                return Err(ApiError::gone(rv, table.compacted + 1));
            }
            Some(rv) => WatchStart::Replay(
                table
                    .history
                    .iter()
                    .filter(|c| c.rv > rv)
                    .cloned()
                    .collect(),
            ),
        };
        Ok((start, table.tx.subscribe(), inner.rv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": name}})
    }

    #[test]
    fn resource_versions_increase_and_history_is_bounded() {
        let store = Store::new(2);
        let a = store.create(Resource::Secrets, obj("a")).unwrap();
        let b = store.create(Resource::Secrets, obj("b")).unwrap();
        assert!(
            b["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > a["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
        );
        store.create(Resource::Secrets, obj("c")).unwrap();
        let first: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let err = store.watch(Resource::Secrets, Some(first - 1)).unwrap_err();
        assert_eq!(err.code, 410);
        let (start, _, _) = store.watch(Resource::Secrets, Some(first + 1)).unwrap();
        let WatchStart::Replay(changes) = start else {
            panic!("a concrete resourceVersion replays history");
        };
        assert_eq!(changes.len(), 1, "only the change after the given version");
    }

    #[test]
    fn owner_index_follows_owner_references() {
        let store = Store::new(10);
        let mut dependent = obj("d");
        dependent["metadata"]["ownerReferences"] = json!([{"uid": "owner-1"}]);
        store.create(Resource::Pods, dependent).unwrap();
        assert_eq!(store.dependents("owner-1").len(), 1);
        store.remove(Resource::Pods, "ns", "d").unwrap();
        assert!(store.dependents("owner-1").is_empty());
    }
}
