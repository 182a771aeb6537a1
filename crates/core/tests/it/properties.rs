//! Properties of the pure config and naming code over arbitrary input: no panics, and names
//! and label values the API server accepts whatever the ids look like.

use opencode_k8s_core::config::{AgentConfig, Quantity, syntax};
use opencode_k8s_core::manifest::{label_value, object_name, run_selector};
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

proptest! {
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
