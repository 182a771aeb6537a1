//! The benchmark's stand-in for `opencode` inside the pod: writes `lines` lines of `bytes`
//! bytes each (newline included) to stdout, as fast as the pipe takes them or at a fixed rate,
//! then a real OpenCode `step_finish` event and, last, the time it is about to exit.
//!
//! Every data line starts with the Unix time in nanoseconds at which it was written, so the
//! engine-side sink can tell pod write → sink latency:
//! `1795785469283000000 0000000042 xxxxxxxx…\n`. The last line is `EXIT <unix nanos>`: the
//! process exits right after writing it, which is the start of completion detection.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::measure::unix_nanos;

/// Characters before a data line's padding: 19 digits of nanoseconds, a space, 10 digits of
/// sequence number, a space.
pub(crate) const HEADER: usize = 31;
/// Prefix of the last line.
pub(crate) const EXIT_PREFIX: &str = "EXIT ";
/// Bytes written per `write` at full speed: the default pipe capacity.
const BATCH: usize = 64 * 1024;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Data lines.
    pub(crate) lines: u64,
    /// Bytes per data line, newline included (at least [`HEADER`] + 1).
    pub(crate) bytes: usize,
    /// Lines per second; `None`: as fast as the pipe takes them.
    pub(crate) rate: Option<f64>,
}

/// OpenCode's last event of a turn (shape from `fixtures/opencode/run1.stdout.jsonl`), so the
/// engine's parser reports usage and a session as for a real run.
const STEP_FINISH: &str = r#"{"type":"step_finish","timestamp":1795785469283,"sessionID":"ses_bench","part":{"id":"prt_bench","reason":"stop","messageID":"msg_bench","sessionID":"ses_bench","type":"step-finish","tokens":{"total":127,"input":100,"output":7,"reasoning":0,"cache":{"write":0,"read":20}},"cost":0}}"#;

fn push_line(buf: &mut Vec<u8>, seq: u64, bytes: usize, padding: &[u8]) {
    // Written with `write!` into a Vec: cannot fail.
    let _ = write!(buf, "{:019} {seq:010} ", unix_nanos());
    buf.extend_from_slice(&padding[..bytes - HEADER - 1]);
    buf.push(b'\n');
}

/// Generate to stdout.
pub(crate) fn run(plan: Plan) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.bytes > HEADER,
        "lines must be longer than {HEADER} bytes"
    );
    let padding = vec![b'x'; plan.bytes];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(BATCH + plan.bytes);
    let started = Instant::now();
    let mut seq = 0;
    while seq < plan.lines {
        let due = match plan.rate {
            None => plan.lines,
            Some(rate) => {
                let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
                due.min(plan.lines)
            }
        };
        while seq < due {
            push_line(&mut buf, seq, plan.bytes, &padding);
            seq += 1;
            if buf.len() >= BATCH {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            out.write_all(&buf)?;
            buf.clear();
        }
        if let Some(rate) = plan.rate
            && seq < plan.lines
        {
            let next = Duration::from_secs_f64(seq as f64 / rate);
            std::thread::sleep(next.saturating_sub(started.elapsed()));
        }
    }
    writeln!(out, "{STEP_FINISH}")?;
    writeln!(out, "{EXIT_PREFIX}{}", unix_nanos())?;
    out.flush()?;
    Ok(())
}
