//! The resume decision table shared with the JS layer's test (`resume-decisions.json`): the
//! engine decides, the adapter builds the prompt for what it decided.

use opencode_k8s_core::resume::{ResumeDecision, Saved, decide};
use serde_json::Value;

#[test]
fn the_shared_decision_table_holds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resume-decisions.json");
    let table: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(table.len() >= 10);
    for row in &table {
        let saved = row["saved"].as_object().map(|saved| Saved {
            session_id: saved["sessionId"].as_str().unwrap(),
            cwd: saved["cwd"].as_str(),
        });
        let decision = decide(
            saved,
            row["cwd"].as_str(),
            row["resumeLastSession"].as_bool().unwrap(),
        );
        let got = match decision {
            ResumeDecision::New => "new",
            ResumeDecision::Resumed { .. } => "resumed",
            ResumeDecision::Fresh { .. } => "fresh",
        };
        assert_eq!(got, row["expect"], "{}", row["case"]);
    }
}
