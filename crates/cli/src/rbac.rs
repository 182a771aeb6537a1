//! `opencode-k8s rbac`: the Role/RoleBinding (or ClusterRole/ClusterRoleBinding) YAML generated
//! from the engine's table of verbs, bound to the ServiceAccount, user or group that runs the
//! engine.

use opencode_k8s_core::config::syntax;
use opencode_k8s_core::rbac::{self, RbacOptions, RbacSubject};

use crate::InputError;

/// Options of `rbac`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  opencode-k8s rbac --namespace paperclip --service-account paperclip | kubectl apply -f -
  opencode-k8s rbac --namespace agents --user alice@example.com   # an operator running the CLI
  opencode-k8s rbac --namespace agents --group platform-team")]
pub(crate) struct Args {
    /// Namespace where agent Jobs run (and where the Role is created).
    #[arg(long, default_value = "paperclip")]
    namespace: String,
    /// ServiceAccount the Paperclip server runs as.
    #[arg(long, default_value = "paperclip")]
    service_account: String,
    /// Namespace of that ServiceAccount [default: --namespace].
    #[arg(long)]
    service_account_namespace: Option<String>,
    /// Bind the role to this user instead of a ServiceAccount (the name the API server
    /// authenticates: a certificate's CN, an OIDC claim).
    #[arg(long, conflicts_with_all = ["service_account", "service_account_namespace", "group"])]
    user: Option<String>,
    /// Bind the role to this group instead of a ServiceAccount.
    #[arg(long, conflicts_with_all = ["service_account", "service_account_namespace"])]
    group: Option<String>,
    /// Grant everything cluster-wide with a ClusterRole (also covers the optional
    /// cluster-scoped checks of `doctor`).
    #[arg(long)]
    cluster_scoped: bool,
    /// Name of the role and its binding.
    #[arg(long, default_value = "opencode-k8s")]
    name: String,
}

#[expect(
    clippy::print_stdout,
    reason = "the YAML on stdout is the command's output"
)]
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let (subject, subject_checks) = subject(args);
    let checks = [
        (
            "--namespace",
            args.namespace.clone(),
            syntax::is_dns1123_label(&args.namespace),
        ),
        (
            "--name",
            args.name.clone(),
            syntax::is_dns1123_subdomain(&args.name),
        ),
    ];
    if let Some((flag, value, _)) = checks
        .into_iter()
        .chain(subject_checks)
        .find(|(_, _, ok)| !ok)
    {
        let problem = if matches!(flag, "--user" | "--group") {
            "empty or has control characters; give the name the API server authenticates"
        } else {
            "not a Kubernetes name; use lowercase letters, digits and `-`"
        };
        return Err(InputError {
            what: format!("{flag} {value}"),
            problem: problem.into(),
        }
        .into());
    }
    let opts = RbacOptions {
        namespace: args.namespace.clone(),
        subject,
        cluster_scoped: args.cluster_scoped,
        name: args.name.clone(),
    };
    print!("{}", rbac::render_yaml(&opts)?);
    Ok(())
}

/// A flag, its value, and whether the value is accepted.
type Check = (&'static str, String, bool);

/// Who the binding names — `--user`, else `--group`, else the ServiceAccount — and the checks
/// of the flags that say so.
fn subject(args: &Args) -> (RbacSubject, Vec<Check>) {
    match (&args.user, &args.group) {
        (Some(user), _) => (
            RbacSubject::User(user.clone()),
            vec![("--user", user.clone(), is_subject_name(user))],
        ),
        (None, Some(group)) => (
            RbacSubject::Group(group.clone()),
            vec![("--group", group.clone(), is_subject_name(group))],
        ),
        (None, None) => {
            let namespace = args
                .service_account_namespace
                .clone()
                .unwrap_or_else(|| args.namespace.clone());
            let checks = vec![
                (
                    "--service-account",
                    args.service_account.clone(),
                    syntax::is_dns1123_subdomain(&args.service_account),
                ),
                (
                    "--service-account-namespace",
                    namespace.clone(),
                    syntax::is_dns1123_label(&namespace),
                ),
            ];
            let subject = RbacSubject::ServiceAccount {
                namespace,
                name: args.service_account.clone(),
            };
            (subject, checks)
        }
    }
}

/// User and group names are free-form strings to RBAC (`alice@example.com`,
/// `system:masters`); only an empty one or one with control characters cannot be meant.
fn is_subject_name(name: &str) -> bool {
    !name.trim().is_empty() && !name.chars().any(char::is_control)
}
