//! The benchmark's smoke scenario end to end: the binary starts the simulated cluster, runs
//! every phase scaled down through the engine and prints a JSON summary with every measurement.
//! Timings are reported, never asserted: shared CI machines make them noise.

use std::process::Command;

use serde_json::Value;

fn number(value: &Value, path: &str) -> f64 {
    let mut at = value;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {at}"))
}

#[test]
fn the_smoke_scenario_reports_every_measurement() {
    let out = Command::new(env!("CARGO_BIN_EXE_opencode-k8s-bench"))
        .args(["--scenario", "smoke"])
        .output()
        .expect("the benchmark runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "benchmark failed:\n{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(summary["scenario"], "smoke");
    assert_eq!(summary["scaledDown"], true);
    assert!(number(&summary, "cpus") >= 1.0);
    assert!(number(&summary, "clusterPeakRssMb") > 0.0);
    assert!(
        stderr.contains("deliver p50/p99"),
        "the human table:\n{stderr}"
    );

    let phases = summary["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "latency",
            "throughput",
            "large",
            "duration-1s",
            "duration-3s"
        ]
    );
    for phase in phases {
        let name = phase["name"].as_str().unwrap();
        let runs = number(phase, "runs");
        assert!(runs >= 1.0, "{name}");
        assert_eq!(number(phase, "succeeded"), runs, "{name}: {phase:#}");
        assert_eq!(phase["complete"], true, "{name}: every line exactly once");
        assert!(number(phase, "concurrency") >= 1.0, "{name}");
        // The generated lines, OpenCode's step_finish and the exit line.
        let lines = number(phase, "linesPerRun");
        assert!(lines >= 3.0, "{name}: {lines}");
        assert!(
            number(phase, "bytesPerRun") >= lines * number(phase, "lineBytes") * 0.5,
            "{name}"
        );
        assert!(number(phase, "wallSeconds") > 0.0, "{name}");
        let requests = &phase["requestsPerRun"];
        for verb in ["create jobs", "create secrets"] {
            assert!(
                number(requests, &format!("byVerb.{verb}")) >= 1.0,
                "{name}: {verb} in {requests}"
            );
        }
        assert!(
            number(requests, "total") - number(requests, "excludingLogs") >= 1.0,
            "{name}: every run reads its log: {requests}"
        );
        let delivered = number(phase, "logDelivery.samples");
        assert_eq!(
            delivered,
            runs * (lines - 2.0),
            "{name}: a latency per data line"
        );
        assert!(number(phase, "logDelivery.p50Ms") >= 0.0, "{name}");
        assert!(
            number(phase, "logDelivery.p99Ms") >= number(phase, "logDelivery.p50Ms"),
            "{name}"
        );
        assert_eq!(number(phase, "completionDetection.samples"), runs, "{name}");
        assert!(number(phase, "completionDetection.p99Ms") > 0.0, "{name}");
        assert_eq!(
            number(phase, "resultAfterLastOutput.samples"),
            runs,
            "{name}"
        );
        assert!(number(phase, "throughput.linesPerSec") > 0.0, "{name}");
        assert!(number(phase, "throughput.mibPerSec") > 0.0, "{name}");
        let rss = &phase["engineRss"];
        assert!(number(rss, "peakMb") >= number(rss, "startMb"), "{name}");
        assert!(number(rss, "peakMb") > 1.0, "{name}");
        assert!(number(rss, "growthMb") >= 0.0, "{name}");
        assert_eq!(phase["failures"], Value::Array(vec![]), "{name}");
    }

    let targets = summary["targets"].as_array().expect("targets");
    let checked: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "lone run: API requests excluding log reads",
        "long run minus short run: API requests",
        "log delivery p99",
        "completion detection p99",
        "completion detection p99, after the last output",
        "aggregate log throughput",
        "engine peak RSS",
        "engine RSS growth, one large run",
    ] {
        assert!(checked.contains(&name), "target {name} in {checked:?}");
    }
    for target in targets {
        assert!(target["met"].is_boolean(), "{target}");
        assert!(target["value"].as_f64().is_some(), "{target}");
    }
}
