//! `doctor`: every check a run depends on, each with what to change when it fails.
//!
//! API reachable, the Paperclip pod found and inheritable, the Jobs' namespace, one
//! SelfSubjectAccessReview per row of [`rbac::RULES`], the shared claim at `/paperclip` and the
//! Secrets the inherited pod spec references. A failing check names the exact RBAC rule or
//! manifest change to make, so an operator fixes everything in one pass instead of one failed
//! run at a time.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Api;
use kube::api::PostParams;
use serde::Serialize;

use super::cluster::{ClientCache, ClusterSource};
use super::introspect::{self, Found, SelfPod};
use super::retry::retry;
use crate::config::AgentConfig;
use crate::error_code::ErrorCode;
use crate::manifest::{InheritedPod, WORKSPACE_MOUNT};
use crate::rbac::{self, Rule, Scope};

mod secrets;

use self::secrets::secret_checks;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckStatus {
    /// Works.
    Pass,
    /// Runs work, but something is degraded or could not be verified.
    Warn,
    /// Runs will fail until this is fixed.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable short name, e.g. `api`, `rbac create jobs`.
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to change, exactly (an RBAC rule, a manifest change), when it did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
            fix,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
            fix,
        }
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    /// The namespace the agent Jobs would run in, once known.
    pub namespace: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// At least one check failed: runs will not work.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Fail)
    }
}

/// Which cluster and namespace to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorTarget {
    /// Where the credentials come from.
    pub source: ClusterSource,
    /// The Jobs' namespace; `None`: the Paperclip pod's, else the kubeconfig's default.
    pub namespace: Option<String>,
}

impl DoctorTarget {
    /// The cluster and namespace an agent config selects, as a run would use them.
    pub fn from_config(config: &AgentConfig) -> Self {
        Self {
            source: ClusterSource::from_fields(
                config.kubeconfig.as_deref(),
                config.kubeconfig_content.as_ref().map(|c| c.expose()),
            ),
            // A per-company namespace is known only for a run; doctor checks the default.
            namespace: config
                .namespace
                .clone()
                .filter(|ns| !ns.contains(crate::config::COMPANY_ID_PLACEHOLDER)),
        }
    }
}

/// Run every check against the cluster `target` selects. Never fails: a check that cannot run
/// is itself reported (and the ones that depend on it are skipped).
pub async fn doctor(target: &DoctorTarget, self_pod: &SelfPod) -> DoctorReport {
    let mut report = DoctorReport {
        namespace: target.namespace.clone(),
        checks: Vec::new(),
    };
    let client = match api_check(target).await {
        Ok((client, check)) => {
            report.checks.push(check);
            client
        }
        Err(check) => {
            report.checks.push(check);
            return report;
        }
    };
    let (check, inherited) = paperclip_pod(&client, self_pod).await;
    report.checks.push(check);
    report
        .checks
        .extend(inherited.as_ref().map(inherited_check));
    let namespace = target
        .namespace
        .clone()
        .or_else(|| inherited.as_ref().and_then(|pod| pod.namespace.clone()))
        .unwrap_or_else(|| client.default_namespace().to_owned());
    report.namespace = Some(namespace.clone());
    let checks = &mut report.checks;
    checks.push(namespace_check(&client, &namespace).await);
    checks.extend(access_checks(&client, &namespace).await);
    checks.push(claim_check(&client, &namespace, inherited.as_ref()).await);
    if let Some(pod) = &inherited {
        checks.extend(secret_checks(&client, &namespace, pod).await);
    }
    name_the_subject(checks, &credentials_subject(&target.source));
    report
}

/// A client for `target` and the check that the API server answers it, or the failed check.
async fn api_check(target: &DoctorTarget) -> Result<(kube::Client, Check), Check> {
    let client = ClientCache::default()
        .client(&target.source)
        .await
        .map_err(|err| Check::fail("api", err.to_string(), None))?;
    match retry("read the API server version", || client.apiserver_version()).await {
        Ok(version) => {
            let detail = format!(
                "reached Kubernetes {} using {}",
                version.git_version, target.source
            );
            Ok((client, Check::pass("api", detail)))
        }
        Err(err) => Err(Check::fail(
            "api",
            format!("failed to reach the API server using {}: {err}", target.source),
            Some("check the server address, network path and credentials of that kubeconfig (`kubectl version` with the same kubeconfig must work)".to_owned()),
        )),
    }
}

/// What the agent Jobs take over from the Paperclip pod.
fn inherited_check(pod: &InheritedPod) -> Check {
    Check::pass(
        "inherited",
        format!(
            "agent Jobs inherit from the Paperclip pod: {}",
            pod.summary().join("; ")
        ),
    )
}

/// Fixes name [`ENGINE_SERVICE_ACCOUNT`]; credentials of another `subject` get its name instead.
fn name_the_subject(checks: &mut [Check], subject: &str) {
    if subject != ENGINE_SERVICE_ACCOUNT {
        for fix in checks.iter_mut().filter_map(|c| c.fix.as_mut()) {
            *fix = fix.replace(ENGINE_SERVICE_ACCOUNT, subject);
        }
    }
}

/// Who fixes name when the credentials are the pod's own; replaced by [`credentials_subject`]
/// otherwise.
const ENGINE_SERVICE_ACCOUNT: &str = "the engine's service account";

/// Who the credentials of `source` authenticate as, in the words a fix uses: the engine's
/// service account only when it is one; for a kubeconfig, its current context's user.
fn credentials_subject(source: &ClusterSource) -> String {
    let kubeconfig = match source {
        ClusterSource::Default if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            return ENGINE_SERVICE_ACCOUNT.to_owned();
        }
        ClusterSource::Default => kube::config::Kubeconfig::read().ok(),
        ClusterSource::KubeconfigPath(path) | ClusterSource::AgentKubeconfigPath(path) => {
            kube::config::Kubeconfig::read_from(path).ok()
        }
        ClusterSource::KubeconfigContent(content) => {
            kube::config::Kubeconfig::from_yaml(content).ok()
        }
    };
    let user = kubeconfig.and_then(|k| {
        let current = k.current_context.clone()?;
        k.contexts
            .iter()
            .find(|c| c.name == current)?
            .context
            .as_ref()?
            .user
            .clone()
    });
    match user {
        // The kubeconfig's name for the user; the API server may know it by another name.
        Some(user) => format!("kubeconfig user {user} of {source}"),
        None => format!("the user of {source}"),
    }
}

/// The YAML of one RBAC rule, and where it goes.
fn rule_fix(rule: &Rule, namespace: &str) -> String {
    let (resource, group) = (rule.resource, rule.group);
    let place = match rule.scope {
        Scope::Namespaced => format!(
            "add this rule to the Role bound to {ENGINE_SERVICE_ACCOUNT} in namespace {namespace}"
        ),
        Scope::Cluster => {
            format!("add this rule to a ClusterRole bound to {ENGINE_SERVICE_ACCOUNT}")
        }
    };
    let all = match rule.scope {
        Scope::Namespaced => {
            format!("`opencode-k8s rbac --namespace {namespace}` prints the whole Role")
        }
        Scope::Cluster => {
            "`opencode-k8s rbac --cluster-scoped` prints the whole ClusterRole".to_owned()
        }
    };
    format!(
        "{place} ({all}):\n- apiGroups: [\"{group}\"]\n  resources: [\"{resource}\"]\n  verbs: [\"{}\"]",
        rule.verb
    )
}

fn find_rule(group: &str, resource: &str, verb: &str) -> Option<&'static Rule> {
    rbac::RULES
        .iter()
        .find(|r| r.group == group && r.resource == resource && r.verb == verb)
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

async fn paperclip_pod(client: &kube::Client, self_pod: &SelfPod) -> (Check, Option<InheritedPod>) {
    const NAME: &str = "paperclip pod";
    match introspect::discover(client, self_pod).await {
        Ok(Found::Pod(pod)) => {
            let check = Check::pass(
                NAME,
                format!(
                    "inheriting from pod {}/{} (container {}, image {})",
                    pod.namespace.as_deref().unwrap_or_default(),
                    pod.pod_name,
                    pod.container_name,
                    pod.image.as_deref().unwrap_or("none")
                ),
            );
            (check, Some(*pod))
        }
        Ok(Found::NotFound(why)) => (
            Check::warn(
                NAME,
                format!("no Paperclip pod to inherit from: {why}; Jobs use the config's `image` and get no shared /paperclip volume"),
                Some("inside the cluster set POD_NAME (fieldRef metadata.name) and POD_NAMESPACE (fieldRef metadata.namespace) on the Paperclip container; from a workstation pass `--pod NAMESPACE/NAME`".to_owned()),
            ),
            None,
        ),
        Err(err) if err.code() == ErrorCode::K8sForbidden => {
            let namespace = self_pod.locate().map(|(ns, _)| ns).unwrap_or_default();
            let fix = find_rule("", "pods", "get").map(|r| rule_fix(r, &namespace));
            (Check::fail(NAME, err.to_string(), fix), None)
        }
        Err(err) if err.code() == ErrorCode::K8sApiUnreachable => {
            (Check::fail(NAME, err.to_string(), None), None)
        }
        Err(err) => (
            Check::fail(
                NAME,
                err.to_string(),
                Some(format!(
                    "in the Paperclip Deployment, mount a ReadWriteMany PersistentVolumeClaim at {WORKSPACE_MOUNT}:\n  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: paperclip-data}}\n  containers[paperclip].volumeMounts:\n  - name: data\n    mountPath: {WORKSPACE_MOUNT}"
                )),
            ),
            None,
        ),
    }
}

async fn namespace_check(client: &kube::Client, namespace: &str) -> Check {
    let name = "namespace";
    let api: Api<Namespace> = Api::all(client.clone());
    match retry("get the namespace", || api.get_opt(namespace)).await {
        Ok(Some(_)) => Check::pass(name, format!("namespace {namespace} exists")),
        Ok(None) => Check::fail(
            name,
            format!("namespace {namespace} does not exist"),
            Some(format!(
                "create it (`kubectl create namespace {namespace}`) or set `namespace` in the agent config to the namespace Paperclip runs in"
            )),
        ),
        Err(err) if is_status(&err, 403) => Check::warn(
            name,
            format!(
                "cannot tell whether namespace {namespace} exists: reading namespaces needs a ClusterRole (runs do not need it)"
            ),
            find_rule("", "namespaces", "get").map(|r| rule_fix(r, namespace)),
        ),
        Err(err) => Check::fail(
            name,
            format!("failed to get namespace {namespace}: {err}"),
            None,
        ),
    }
}

/// One SelfSubjectAccessReview per rule of the table, in the Jobs' namespace.
async fn access_checks(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let params = PostParams::default();
    let mut checks = Vec::with_capacity(rbac::RULES.len());
    for rule in rbac::RULES {
        if is_review_rule(rule) && !checks.is_empty() {
            // The reviews above were created: that is the answer, and a review of this very
            // verb can come out denied where the API grants it outside RBAC rules.
            checks.push(access_check(rule, namespace, true));
            continue;
        }
        let review = access_review(rule, namespace);
        match retry("create a SelfSubjectAccessReview", || {
            api.create(&params, &review)
        })
        .await
        {
            Ok(answer) => {
                let allowed = answer.status.as_ref().is_some_and(|s| s.allowed);
                checks.push(access_check(rule, namespace, allowed));
            }
            Err(err) => {
                // Without reviews nothing below can be checked: say so once.
                checks.push(Check::warn(
                    "rbac",
                    format!("cannot check permissions: failed to create a SelfSubjectAccessReview: {err}"),
                    find_rule("authorization.k8s.io", "selfsubjectaccessreviews", "create")
                        .map(|r| rule_fix(r, namespace)),
                ));
                return checks;
            }
        }
    }
    checks
}

/// The rule that lets doctor create the reviews themselves.
fn is_review_rule(rule: &Rule) -> bool {
    (rule.group, rule.resource, rule.verb)
        == ("authorization.k8s.io", "selfsubjectaccessreviews", "create")
}

/// The review asking whether the engine may do what `rule` says, in `namespace` when it is a
/// namespaced rule.
fn access_review(rule: &Rule, namespace: &str) -> SelfSubjectAccessReview {
    let (resource, subresource) = match rule.resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (rule.resource, None),
    };
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(rule.group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(rule.verb.to_owned()),
                namespace: (rule.scope == Scope::Namespaced).then(|| namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The check of `rule` from the review's answer: a denied rule fails, or warns when runs work
/// without it, with the rule to add.
fn access_check(rule: &Rule, namespace: &str, allowed: bool) -> Check {
    let name = format!("rbac {} {}", rule.verb, rule.resource);
    let group = if rule.group.is_empty() {
        "core"
    } else {
        rule.group
    };
    let scope = match rule.scope {
        Scope::Namespaced => format!("in namespace {namespace}"),
        Scope::Cluster => "cluster-wide".to_owned(),
    };
    let what = format!("{} {} ({group}) {scope}", rule.verb, rule.resource);
    if allowed {
        return Check::pass(name, what);
    }
    let detail = format!("denied: {what} — {}", rule.why);
    let fix = Some(rule_fix(rule, namespace));
    if rule.optional {
        Check::warn(name, detail, fix)
    } else {
        Check::fail(name, detail, fix)
    }
}

/// The claim mounted at `/paperclip`: it must exist in the Jobs' namespace and be ReadWriteMany,
/// or agent pods on other nodes cannot mount it.
async fn claim_check(
    client: &kube::Client,
    namespace: &str,
    inherited: Option<&InheritedPod>,
) -> Check {
    let name = "shared volume";
    let Some(claim) = inherited.and_then(|pod| {
        pod.workspace_volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.clone())
    }) else {
        return Check::warn(
            name,
            format!(
                "not checked: no Paperclip pod, so no claim mounted at {WORKSPACE_MOUNT} is known"
            ),
            None,
        );
    };
    match get_claim(client, namespace, &claim).await {
        Ok(pvc) => judge_claim(namespace, &claim, &pvc),
        Err(check) => check,
    }
}

/// The shared volume's claim, or the failed check saying why it cannot be read.
async fn get_claim(
    client: &kube::Client,
    namespace: &str,
    claim: &str,
) -> Result<PersistentVolumeClaim, Check> {
    let name = "shared volume";
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    match retry("get the claim", || api.get_opt(claim)).await {
        Ok(Some(pvc)) => Ok(pvc),
        Ok(None) => Err(Check::fail(
            name,
            format!(
                "PersistentVolumeClaim {namespace}/{claim} (mounted at {WORKSPACE_MOUNT} by the Paperclip pod) does not exist in the Jobs' namespace"
            ),
            Some(format!(
                "run the agent Jobs in the Paperclip pod's namespace (`namespace` in the agent config), or create a ReadWriteMany claim {claim} in namespace {namespace}"
            )),
        )),
        Err(err) if is_status(&err, 403) => Err(Check::fail(
            name,
            format!("cannot read PersistentVolumeClaim {namespace}/{claim}: forbidden"),
            find_rule("", "persistentvolumeclaims", "get").map(|r| rule_fix(r, namespace)),
        )),
        Err(err) => Err(Check::fail(
            name,
            format!("failed to get PersistentVolumeClaim {namespace}/{claim}: {err}"),
            None,
        )),
    }
}

/// The shared volume's check from its claim: ReadWriteMany, and bound.
fn judge_claim(namespace: &str, claim: &str, pvc: &PersistentVolumeClaim) -> Check {
    let name = "shared volume";
    let modes = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    if !modes.iter().any(|m| m == "ReadWriteMany") {
        return Check::fail(
            name,
            format!(
                "PersistentVolumeClaim {namespace}/{claim} has access modes [{}], not ReadWriteMany: agent pods on other nodes cannot mount it",
                modes.join(", ")
            ),
            Some(format!(
                "recreate claim {claim} with `spec.accessModes: [ReadWriteMany]` on a storage class that supports it (NFS, CephFS, EFS, Azure Files, Filestore), and copy the data over"
            )),
        );
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
    match phase.as_deref() {
        Some("Pending" | "Lost") => Check::warn(
            name,
            format!(
                "PersistentVolumeClaim {namespace}/{claim} is ReadWriteMany but {}",
                phase.as_deref().unwrap_or_default()
            ),
            Some(format!(
                "`kubectl describe pvc -n {namespace} {claim}` says why it is not bound"
            )),
        ),
        _ => Check::pass(
            name,
            format!("PersistentVolumeClaim {namespace}/{claim} is ReadWriteMany"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_is_named_by_its_user_not_as_the_service_account() {
        let content = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://k:6443\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: alice\ncurrent-context: c\nusers:\n- name: alice\n  user:\n    token: t\n";
        let who = credentials_subject(&ClusterSource::KubeconfigContent(content.into()));
        assert!(
            who.starts_with("kubeconfig user alice of inline kubeconfigContent"),
            "{who}"
        );
        assert!(!who.contains(ENGINE_SERVICE_ACCOUNT));
    }

    #[test]
    fn a_rule_fix_is_yaml_to_paste_into_the_role() {
        let rule = find_rule("", "pods/log", "get").expect("in the table");
        assert_eq!(
            rule_fix(rule, "agents"),
            "add this rule to the Role bound to the engine's service account in namespace agents (`opencode-k8s rbac --namespace agents` prints the whole Role):\n- apiGroups: [\"\"]\n  resources: [\"pods/log\"]\n  verbs: [\"get\"]"
        );
    }

    #[test]
    fn checks_serialize_in_camel_case_without_an_empty_fix() {
        let json = serde_json::to_value(Check::pass("api", "ok")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "api", "status": "pass", "detail": "ok"})
        );
    }

    #[test]
    fn a_denied_rule_fails_or_warns_when_optional() {
        let required = rbac::RULES.iter().find(|r| !r.optional).unwrap();
        let check = access_check(required, "agents", false);
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.detail.starts_with("denied: "), "{}", check.detail);
        assert_eq!(check.fix, Some(rule_fix(required, "agents")));
        let optional = rbac::RULES.iter().find(|r| r.optional).unwrap();
        assert_eq!(
            access_check(optional, "agents", false).status,
            CheckStatus::Warn
        );
        assert_eq!(
            access_check(required, "agents", true).status,
            CheckStatus::Pass
        );
    }

    #[test]
    fn a_subresource_is_reviewed_as_one() {
        let rule = find_rule("", "pods/log", "get").expect("in the table");
        let attributes = access_review(rule, "agents")
            .spec
            .resource_attributes
            .unwrap();
        assert_eq!(attributes.resource.as_deref(), Some("pods"));
        assert_eq!(attributes.subresource.as_deref(), Some("log"));
        assert_eq!(attributes.namespace.as_deref(), Some("agents"));
    }
}
