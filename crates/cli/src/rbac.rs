//! `opencode-k8s rbac`: the Role/RoleBinding (or ClusterRole/ClusterRoleBinding) YAML generated
//! from the engine's table of verbs.

use opencode_k8s_core::config::syntax;
use opencode_k8s_core::rbac::{self, RbacOptions};

use crate::InputError;

/// Options of `rbac`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  opencode-k8s rbac --namespace paperclip --service-account paperclip | kubectl apply -f -"
)]
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
    let opts = RbacOptions {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        service_account_namespace: args
            .service_account_namespace
            .clone()
            .unwrap_or_else(|| args.namespace.clone()),
        cluster_scoped: args.cluster_scoped,
        name: args.name.clone(),
    };
    let checks = [
        (
            "--namespace",
            &opts.namespace,
            syntax::is_dns1123_label(&opts.namespace),
        ),
        (
            "--service-account",
            &opts.service_account,
            syntax::is_dns1123_subdomain(&opts.service_account),
        ),
        (
            "--service-account-namespace",
            &opts.service_account_namespace,
            syntax::is_dns1123_label(&opts.service_account_namespace),
        ),
        (
            "--name",
            &opts.name,
            syntax::is_dns1123_subdomain(&opts.name),
        ),
    ];
    if let Some((flag, value, _)) = checks.iter().find(|(_, _, ok)| !ok) {
        return Err(InputError {
            what: format!("{flag} {value}"),
            problem: "not a Kubernetes name; use lowercase letters, digits and `-`".into(),
        }
        .into());
    }
    print!("{}", rbac::render_yaml(&opts)?);
    Ok(())
}
