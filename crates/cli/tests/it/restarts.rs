//! Two `opencode-k8s run` processes for one agent: the agent's Lease lets exactly one Job run
//! at a time across processes (the in-process guard could not see the other process).

use opencode_k8s_testkit::{TIMELINE, TIMELINE_AGENT, assert_each_ran_alone};
use serde_json::json;

use crate::sim::{NS, POD, Sim, run_args};
use crate::stderr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_for_one_agent_run_one_job_at_a_time() {
    let sim = Sim::start().await;
    sim.opencode(TIMELINE_AGENT);
    // Every request slow: both processes are between their look at the agent's Jobs and their
    // create at once, which a per-process guard cannot see.
    sim.cluster
        .faults()
        .latency(std::time::Duration::from_millis(400));
    let config = sim.config(json!({}));
    let config = config.to_str().unwrap();
    let process = |run: &'static str| {
        sim.command(&run_args(
            config,
            "hi",
            &[
                "--pod",
                POD,
                "--cwd",
                "/paperclip/workspaces/project",
                "--agent-id",
                "agent-1",
                "--run-id",
                run,
            ],
        ))
        .output()
    };
    let (a, b) = tokio::join!(process("run-a"), process("run-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let timeline =
        std::fs::read_to_string(sim.cluster.pvc_path(NS, "paperclip-data").join(TIMELINE)).unwrap();
    assert_each_ran_alone(&timeline, 2);
    let waited = format!("{}{}", stderr(&a), stderr(&b));
    assert!(waited.contains("waiting for"), "{waited}");
}
