//! Recorded API objects (`fixtures/kube/`), for the lifecycle's unit tests.

use k8s_openapi::api::core::v1::Pod;

/// A recorded object, parsed.
pub(super) fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/../../fixtures/kube/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The first pod of a recorded pod list.
pub(super) fn first_pod(name: &str) -> Pod {
    let list: serde_json::Value = fixture(name);
    serde_json::from_value(list["items"][0].clone()).unwrap()
}
