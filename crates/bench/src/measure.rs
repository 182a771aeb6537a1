//! Measuring without disturbing what is measured: a fixed-size latency histogram (millions of
//! samples must not grow the engine process's memory) and the process's resident set size.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Values below this many microseconds get a bucket each.
const EXACT: u64 = 1024;
/// Buckets per power of two above [`EXACT`]: about 0.8 % relative precision.
const SUB: u64 = 128;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Powers of two from `EXACT` (2^10 µs) up to 2^40 µs (12 days) — more than any run.
const OCTAVES: u64 = 30;

/// A log-linear histogram of durations in microseconds: exact below ~1 ms, ~0.8 % above.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; (EXACT + OCTAVES * SUB) as usize],
            count: 0,
            max: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros());
    let sub = (us >> (octave - u64::from(SUB_BITS))) & (SUB - 1);
    let index = EXACT + (octave - u64::from(EXACT.trailing_zeros())) * SUB + sub;
    index.min(EXACT + OCTAVES * SUB - 1) as usize
}

/// The lowest value of a bucket.
fn value_of(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < EXACT {
        return bucket;
    }
    let octave = (bucket - EXACT) / SUB + u64::from(EXACT.trailing_zeros());
    let sub = (bucket - EXACT) % SUB;
    (1 << octave) | (sub << (octave - u64::from(SUB_BITS)))
}

impl Histogram {
    /// Record one duration; a negative one (clock steps) counts as zero.
    pub(crate) fn record_nanos(&mut self, nanos: i64) {
        let us = u64::try_from(nanos / 1000).unwrap_or(0);
        self.buckets[bucket_of(us)] += 1;
        self.count += 1;
        self.max = self.max.max(us);
    }

    /// The value at quantile `q` (0..=1), in microseconds; `None` without samples.
    fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(value_of(bucket).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p99 and max in milliseconds.
    pub(crate) fn summary(&self) -> Quantiles {
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1000.0);
        Quantiles {
            samples: self.count,
            p50_ms: ms(self.quantile_us(0.50)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms((self.count > 0).then_some(self.max)),
        }
    }
}

/// A latency distribution as reported.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Quantiles {
    /// How many samples.
    pub(crate) samples: u64,
    /// Median, ms (`null` without samples).
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub(crate) p99_ms: Option<f64>,
    /// Largest, ms.
    pub(crate) max_ms: Option<f64>,
}

/// Wall-clock time as Unix nanoseconds: the generator in the pod and the sink here compare
/// stamps taken with the same machine clock.
pub(crate) fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn status_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The resident set size now, in KiB.
pub(crate) fn rss_kib() -> u64 {
    status_kib().0
}

/// The peak resident set size of a phase: the kernel's high-water mark (reset at the start,
/// where the kernel allows it) and a 10 ms sampler as a fallback, whichever is higher.
#[derive(Debug)]
pub(crate) struct RssWatch {
    start_kib: u64,
    stop: CancellationToken,
    sampler: tokio::task::JoinHandle<u64>,
}

impl RssWatch {
    pub(crate) fn start() -> Self {
        // "5" resets VmHWM to the current RSS (Linux ≥ 4.0); without it the high-water mark is
        // the process's lifetime peak and only the sampler tells this phase's.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let start_kib = rss_kib();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                peak = peak.max(rss_kib());
                tokio::select! {
                    () = token.cancelled() => return peak,
                    _ = tick.tick() => {}
                }
            }
        });
        Self {
            start_kib,
            stop,
            sampler,
        }
    }

    /// Stop sampling: RSS at the start, at the peak and now, in KiB.
    pub(crate) async fn finish(self) -> Rss {
        self.stop.cancel();
        let sampled = self.sampler.await.unwrap_or(0);
        let (end_kib, hwm_kib) = status_kib();
        let peak_kib = sampled.max(hwm_kib).max(end_kib);
        Rss {
            start_mb: mb(self.start_kib),
            peak_mb: mb(peak_kib),
            end_mb: mb(end_kib),
            growth_mb: mb(peak_kib.saturating_sub(self.start_kib)),
        }
    }
}

/// The peak resident set size of another process (the cluster), MiB.
pub(crate) fn peak_mb_of(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(mb(kib))
}

fn mb(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Resident set size of the engine process over a phase, MiB.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rss {
    /// When the phase started.
    pub(crate) start_mb: f64,
    /// The highest during the phase.
    pub(crate) peak_mb: f64,
    /// When it ended.
    pub(crate) end_mb: f64,
    /// Peak minus start.
    pub(crate) growth_mb: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_a_percent() {
        for us in [0, 1, 999, 1023, 1024, 1500, 25_000, 250_000, 3_600_000_000] {
            let low = value_of(bucket_of(us));
            assert!(low <= us, "{us} → {low}");
            assert!((us - low) as f64 <= us as f64 * 0.008 + 1.0, "{us} → {low}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record_nanos(ms * 1_000_000);
        }
        let q = h.summary();
        assert_eq!(q.samples, 100);
        let p50 = q.p50_ms.unwrap();
        let p99 = q.p99_ms.unwrap();
        assert!((49.5..=50.0).contains(&p50), "{p50}");
        assert!((98.2..=99.0).contains(&p99), "{p99}");
        assert_eq!(q.max_ms, Some(100.0));
        assert_eq!(Histogram::default().summary().p99_ms, None);
    }
}
