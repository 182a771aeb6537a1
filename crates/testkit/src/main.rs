//! `kube-sim`: serve the simulated cluster (a test double that never schedules real work).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use opencode_k8s_testkit::{Cluster, ClusterOptions, parse_seed};

/// A simulated Kubernetes cluster for opencode-k8s tests and the offline demo. TEST DOUBLE:
/// pods run as local processes; nothing real is scheduled.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the cluster and serve until Ctrl-C or SIGTERM.
    Serve {
        /// A YAML seed: namespaces, paperclip (namespaces to seed a Paperclip pod into),
        /// objects, users.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Where to write the kubeconfig.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        seed,
        kubeconfig_out,
        port,
    } = Cli::parse().command;
    let seed = match &seed {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the seed file {}", path.display()))?;
            Some(parse_seed(&text)?)
        }
        None => None,
    };
    let cluster = Cluster::start(ClusterOptions {
        port,
        kubeconfig_path: kubeconfig_out,
        ..ClusterOptions::default()
    })
    .await?;
    if let Some(seed) = &seed {
        cluster.apply_seed(seed)?;
    }
    announce(&cluster);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cluster.shutdown().await;
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "telling the user where the kubeconfig is is the point"
)]
fn announce(cluster: &Cluster) {
    println!("kube-sim (a simulated cluster for tests; it runs no real workloads)");
    println!("server:     {}", cluster.url());
    println!("kubeconfig: {}", cluster.kubeconfig_path().display());
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
}
