//! The run's default-deny egress NetworkPolicy (`networkPolicy: true`).
//!
//! One policy per run, named like its Job and selecting the run's pod by its run-id label. It
//! is created before the Job, owned by the run's Secret (which the Job owns), so it exists before
//! the pod can start and is garbage-collected with the run. Allowed egress: DNS (port 53 to any
//! destination, so node-local caches work), the Paperclip pods (selected by the Paperclip pod's
//! own labels in its namespace, any port: a Service port is translated to the pod's port before
//! the policy applies) and the operator's `networkPolicyEgress` CIDRs and ports. Ingress is not
//! restricted: the agent listens on nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{InheritedPod, RUN_ID_KEY};
use crate::config::{AgentConfig, EgressRule};

/// Label the API server sets on every namespace to its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The NetworkPolicy of the run whose Job is `job`.
pub(super) fn network_policy(
    name: &str,
    namespace: Option<&str>,
    job: &Job,
    inherited: Option<&InheritedPod>,
    config: &AgentConfig,
) -> NetworkPolicy {
    let run_label = job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(RUN_ID_KEY))
        .cloned()
        .unwrap_or_default();
    let mut egress = vec![NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }];
    egress.extend(
        inherited
            .filter(|p| !p.labels.is_empty())
            .map(paperclip_rule),
    );
    egress.extend(config.network_policy_egress.iter().map(cidr_rule));
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: job.metadata.labels.clone(),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(RUN_ID_KEY.to_owned(), run_label)])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ingress: None,
        }),
    }
}

/// One destination port.
fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: None,
    }
}

/// Egress to the Paperclip pods, on any port: selected by the Paperclip pod's own labels, in
/// its namespace.
fn paperclip_rule(pod: &InheritedPod) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(pod.labels.clone()),
                match_expressions: None,
            }),
            namespace_selector: pod.namespace.as_ref().map(|ns| LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_owned(),
                    ns.clone(),
                )])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: None,
    }
}

/// Egress to one operator-given CIDR, on its TCP ports (every port when it lists none).
fn cidr_rule(rule: &EgressRule) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: rule.cidr.clone(),
                except: None,
            }),
            ..Default::default()
        }]),
        ports: (!rule.ports.is_empty())
            .then(|| rule.ports.iter().map(|p| port("TCP", *p)).collect()),
    }
}
