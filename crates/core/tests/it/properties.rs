//! Properties of the pure config and naming code over arbitrary input: no panics, and names
//! and label values the API server accepts whatever the ids look like.

use opencode_k8s_core::config::{AgentConfig, Quantity, syntax};
use opencode_k8s_core::manifest::{
    self, InheritedPod, ManifestError, RunRequest, label_value, object_name, run_selector,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[A-Za-z_=#\n ,:{}\\[\\]'\"-]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_.]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The example Paperclip pod, parsed once.
fn example_pod() -> InheritedPod {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/paperclip-pod.yaml"
    ))
    .unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_saphyr::from_str(&text).unwrap();
    InheritedPod::from_pod(&pod, None).unwrap()
}

/// A run without its own cwd, so the config's `cwd` is the one used.
fn bare_request() -> RunRequest {
    RunRequest {
        run_id: "285e8154-4155-4792-80e6-14b22ca3a76a".into(),
        agent_id: "2a47a922-df57-40c7-9df4-1fec93a4f5cb".into(),
        company_id: "652fd1a3-6342-470f-91db-c07fbacd1374".into(),
        agent_name: Some("Echo Agent".into()),
        task_key: None,
        prompt: "hi".into(),
        fresh_prompt: None,
        cwd: None,
        paperclip_env: Default::default(),
        api_key: None,
        resume: None,
        attempt: 1,
    }
}

/// Field names plus the groups nested fields live in (`resources`, ...).
fn field_and_group_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = opencode_k8s_core::config::FIELDS
        .iter()
        .map(|f| f.name)
        .collect();
    names.extend(["resources", "resources.requests", "resources.limits"]);
    names
}

proptest! {
    /// Any JSON value in any field (or group) either renders a Job the API server would accept
    /// by name and labels, or is refused naming that field: never a silent default.
    #[test]
    fn any_value_in_any_field_renders_a_valid_job_or_is_refused_by_name(
        field in prop::sample::select(field_and_group_names()),
        value in any_json(),
    ) {
        let mut input = json!({"model": "a/b", "cwd": "/paperclip/workspaces/app"});
        input[field] = value;
        let nested_parent = |path: &str| field.starts_with(&format!("{path}."));
        // A request above the default limit is reported at the limit, which names the request.
        let paired_limit = |path: &str| {
            field.strip_prefix("resources.requests.")
                .is_some_and(|kind| path == format!("resources.limits.{kind}"))
        };
        match AgentConfig::from_json(&input) {
            Err(e) => {
                for fe in &e.errors {
                    prop_assert!(
                        fe.path.starts_with(field) || nested_parent(&fe.path) || paired_limit(&fe.path),
                        "{field}: error at {}", fe.path
                    );
                }
            }
            Ok(config) => match manifest::render(&bare_request(), Some(&example_pod()), &config) {
                Ok(r) => {
                    let name = r.job.metadata.name.clone().unwrap();
                    prop_assert!(syntax::is_dns1123_label(&name));
                    if let Some(ns) = &r.job.metadata.namespace {
                        prop_assert!(syntax::is_dns1123_label(ns), "{ns}");
                    }
                    for (k, v) in r.job.metadata.labels.iter().flatten() {
                        prop_assert!(syntax::is_qualified_name(k) && syntax::is_label_value(v), "{k}={v}");
                    }
                    prop_assert!(serde_json::to_value(&r.job).is_ok());
                }
                Err(ManifestError::CwdOffClaim { .. }) => prop_assert_eq!(field, "cwd"),
                Err(other) => prop_assert!(false, "{field}: accepted but not renderable: {other}"),
            },
        }
    }

    #[test]
    fn label_values_are_always_valid_and_stable(id in ".{0,100}") {
        let v = label_value(&id);
        prop_assert!(syntax::is_label_value(&v), "{id:?} -> {v:?}");
        prop_assert_eq!(&v, &label_value(&id));
        let suffix = format!("={}", v);
        prop_assert!(run_selector(&id).ends_with(&suffix));
    }

    #[test]
    fn object_names_are_always_dns_labels(name in proptest::option::of(".{0,80}"), run in ".{0,80}", attempt in 0u32..1000) {
        let n = object_name(name.as_deref(), &run, attempt);
        prop_assert!(syntax::is_dns1123_label(&n), "{n}");
    }

    #[test]
    fn quantity_parsing_never_panics(text in ".{0,30}") {
        let _ = Quantity::parse(&text);
    }

    #[test]
    fn quantities_order_like_their_values(a in 0u32..100_000, b in 0u32..100_000) {
        // `a` millicores against `b/1000` cores written as a decimal.
        let milli = Quantity::parse(&format!("{a}m")).unwrap();
        let decimal = Quantity::parse(&format!("{}.{:03}", b / 1000, b % 1000)).unwrap();
        prop_assert_eq!(milli.cmp(&decimal), a.cmp(&b));
    }

    #[test]
    fn any_field_value_is_accepted_or_reported_never_a_panic(
        field in prop::sample::select(opencode_k8s_core::config::FIELDS.iter().map(|f| f.name).collect::<Vec<_>>()),
        value in any_json(),
    ) {
        let input = json!({"model": "a/b", field: value});
        if let Err(e) = AgentConfig::from_json(&input) {
            prop_assert!(!e.errors.is_empty());
            prop_assert!(e.errors.iter().all(|fe| !fe.path.is_empty() && !fe.accepted.is_empty()));
        }
    }
}
