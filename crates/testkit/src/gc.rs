//! The garbage collector: deletes the dependents of removed owners (background propagation),
//! and finishes foreground deletion — dependents first, then the owner carrying the
//! `foregroundDeletion` finalizer.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Shared;
use crate::objects::{self, Preconditions, Propagation};
use crate::resource::Resource;
use crate::store::{Change, ChangeKind, next_change};

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn deleting_in_foreground(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
}

/// Runs the collector until `cancel`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<Arc<Change>>,
    cancel: CancellationToken,
) {
    while let Some(change) = next_change(&mut changes, &cancel).await {
        match change.kind {
            ChangeKind::Deleted => {
                delete_dependents(&shared, text(&change.object["metadata"]["uid"]));
                release_owners(&shared, &change.object);
            }
            ChangeKind::Modified if deleting_in_foreground(&change.object) => {
                let meta = &change.object["metadata"];
                let uid = text(&meta["uid"]);
                if shared.store.dependents(uid).is_empty() {
                    remove_owner(&shared, change.resource, &change.object);
                } else {
                    delete_dependents(&shared, uid);
                }
            }
            _ => {}
        }
    }
}

fn delete_dependents(shared: &Shared, owner_uid: &str) {
    for (resource, ns, name) in shared.store.dependents(owner_uid) {
        // A dependent already gone or already marked needs nothing more.
        let _ = objects::delete(
            &shared.store,
            resource,
            &ns,
            &name,
            Some(Propagation::Background),
            None,
            &Preconditions::default(),
        );
    }
}

/// A dependent is gone: an owner waiting for it in foreground deletion may now go too.
fn release_owners(shared: &Shared, dependent: &Value) {
    let ns = text(&dependent["metadata"]["namespace"]);
    for owner in dependent["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(resource) = Resource::from_kind(text(&owner["kind"])) else {
            continue;
        };
        let owner_ns = if resource.namespaced() { ns } else { "" };
        let Some(obj) = shared.store.get(resource, owner_ns, text(&owner["name"])) else {
            continue;
        };
        let uid = text(&owner["uid"]);
        if obj["metadata"]["uid"].as_str() == Some(uid)
            && deleting_in_foreground(&obj)
            && shared.store.dependents(uid).is_empty()
        {
            remove_owner(shared, resource, &obj);
        }
    }
}

fn remove_owner(shared: &Shared, resource: Resource, obj: &Value) {
    let meta = &obj["metadata"];
    shared
        .store
        .remove(resource, text(&meta["namespace"]), text(&meta["name"]));
}
