//! The benchmark's run sink: counts what the engine delivers and times each generated line from
//! its write in the pod to its arrival here, keeping nothing of the output itself (the engine's
//! memory is what is measured).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use futures::future::BoxFuture;
use opencode_k8s_core::event::{RunEvent, RunSink};

use crate::generate::{EXIT_PREFIX, HEADER};
use crate::measure::{Histogram, unix_nanos};

/// What all runs of a phase share: one histogram, so memory does not grow with the run count.
#[derive(Debug, Default)]
pub(crate) struct PhaseStats {
    pub(crate) delivery: Mutex<Histogram>,
    /// First and last output arrival (Unix ns), for the delivery-span throughput.
    pub(crate) first_output_ns: AtomicI64,
    pub(crate) last_output_ns: AtomicI64,
}

impl PhaseStats {
    pub(crate) fn new() -> Self {
        Self {
            first_output_ns: AtomicI64::new(i64::MAX),
            last_output_ns: AtomicI64::new(i64::MIN),
            ..Self::default()
        }
    }
}

/// The sink of one run.
#[derive(Debug)]
pub(crate) struct CountingSink<'a> {
    phase: &'a PhaseStats,
    /// Output lines delivered (every line, the OpenCode event and the exit line included).
    pub(crate) lines: AtomicU64,
    /// Generated data lines delivered.
    pub(crate) data_lines: AtomicU64,
    /// Output bytes delivered.
    pub(crate) bytes: AtomicU64,
    /// Notices and Kubernetes events.
    pub(crate) notices: AtomicU64,
    /// When the generator said it was exiting (Unix ns; 0 until seen).
    pub(crate) exit_ns: AtomicI64,
    /// When the last output arrived (Unix ns; 0 until some did).
    pub(crate) last_output_ns: AtomicI64,
}

impl<'a> CountingSink<'a> {
    pub(crate) fn new(phase: &'a PhaseStats) -> Self {
        Self {
            phase,
            lines: AtomicU64::new(0),
            data_lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            exit_ns: AtomicI64::new(0),
            last_output_ns: AtomicI64::new(0),
        }
    }

    fn output(&self, text: &str) {
        let now = unix_nanos();
        self.phase.first_output_ns.fetch_min(now, Ordering::Relaxed);
        self.phase.last_output_ns.fetch_max(now, Ordering::Relaxed);
        self.last_output_ns.store(now, Ordering::Relaxed);
        self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        let mut lines = 0;
        let mut data = 0;
        let mut delivery = self
            .phase
            .delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for line in text.split_inclusive('\n') {
            lines += 1;
            if let Some(written) = data_stamp(line) {
                data += 1;
                delivery.record_nanos(now - written);
            } else if let Some(exit) = line
                .strip_prefix(EXIT_PREFIX)
                .and_then(|rest| rest.trim_end().parse().ok())
            {
                self.exit_ns.store(exit, Ordering::Relaxed);
            }
        }
        self.lines.fetch_add(lines, Ordering::Relaxed);
        self.data_lines.fetch_add(data, Ordering::Relaxed);
    }
}

/// The write time of a generated data line.
fn data_stamp(line: &str) -> Option<i64> {
    let bytes = line.as_bytes();
    if bytes.len() < HEADER || bytes[19] != b' ' || !bytes[..19].iter().all(u8::is_ascii_digit) {
        return None;
    }
    line[..19].parse().ok()
}

impl RunSink for CountingSink<'_> {
    fn emit(&self, event: RunEvent) -> BoxFuture<'_, ()> {
        match &event {
            RunEvent::Output { text, .. } => self.output(text),
            RunEvent::Notice { .. } | RunEvent::Kube { .. } => {
                self.notices.fetch_add(1, Ordering::Relaxed);
            }
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_and_reads_stamps_and_the_exit_time() {
        let phase = PhaseStats::new();
        let sink = CountingSink::new(&phase);
        let now = unix_nanos();
        let text = format!(
            "{now:019} 0000000000 xx\n{now:019} 0000000001 xx\n{{\"type\":\"step_finish\"}}\nEXIT {now}\n"
        );
        sink.output(&text);
        assert_eq!(sink.lines.load(Ordering::Relaxed), 4);
        assert_eq!(sink.data_lines.load(Ordering::Relaxed), 2);
        assert_eq!(sink.bytes.load(Ordering::Relaxed), text.len() as u64);
        assert_eq!(sink.exit_ns.load(Ordering::Relaxed), now);
        assert_eq!(phase.delivery.lock().unwrap().summary().samples, 2);
    }
}
