//! Which entries of a container's timestamped log were already delivered: the position
//! bookkeeping that makes delivery exactly-once across reconnects, and its checkpoint string.
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, ToSpan};

/// How far before the newest delivered timestamp a reconnect asks to start. containerd stamps
/// stdout and stderr on their own, so the merged log is in file order, not timestamp order: an
/// entry may follow a later-stamped one by a few milliseconds (measured on v1.36). Entries of
/// the file after the delivered ones but stamped more than this before the newest delivered
/// entry would be lost on a reconnect.
const SKEW_MARGIN: SignedDuration = SignedDuration::from_secs(2);

/// Which entries of a timestamped log were already delivered.
///
/// Within a connection entries are delivered by position, whatever their timestamps. Everything
/// delivered is a prefix of the log file, so the answer to `sinceTime=S` (the file filtered by
/// `ts >= S`, in file order) starts with exactly the delivered entries stamped `>= S`: a
/// reconnect skips that many. `S` is the newest delivered timestamp floored to the second less
/// [`SKEW_MARGIN`], so only a bounded window of delivered timestamps has to be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogCursor {
    /// The `sinceTime` of the current connection (`None`: from the beginning).
    since: Option<Timestamp>,
    /// How many delivered entries are stamped at or after `since`.
    prefix: u64,
    /// Delivered timestamps (with their counts) no older than the newest less the margin and a
    /// second: enough to count the prefix of any later `sinceTime`.
    window: BTreeMap<Timestamp, u64>,
    /// `window` holds every delivered entry stamped at or after `since` (false after a restore
    /// from a checkpoint, until the skipped entries were seen again).
    window_complete: bool,
    /// On the current connection: how many entries are still to be skipped.
    skip: u64,
    /// The last delivered entry is a line still being written, of which this many bytes were
    /// delivered (a line too long to hold in memory is streamed rather than held whole).
    partial: Option<u64>,
}

impl Default for LogCursor {
    /// A cursor that has delivered nothing yet.
    fn default() -> Self {
        Self {
            since: None,
            prefix: 0,
            window: BTreeMap::new(),
            window_complete: true,
            skip: 0,
            partial: None,
        }
    }
}

/// What to do with an entry, by its position on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// New: deliver it.
    Deliver,
    /// Delivered before: drop it.
    Drop,
    /// Partly delivered before: deliver what follows its first `n` bytes.
    ResumeAfter(u64),
}

impl LogCursor {
    /// The cursor as an opaque string (`<sinceTime>/<count>[+<bytes>]`: reconnect from that whole
    /// second, skip `count` entries, then skip `bytes` of the next), `None` before any output.
    pub(crate) fn checkpoint(&self) -> Option<String> {
        let (since, count) = if self.window_complete {
            let since = self.next_since()?;
            (since, self.delivered_since(since))
        } else {
            (self.since?, self.prefix)
        };
        Some(match self.partial {
            Some(bytes) => format!("{since}/{count}+{bytes}"),
            None => format!("{since}/{count}"),
        })
    }

    /// A cursor from [`Self::checkpoint`]'s string.
    pub(crate) fn from_checkpoint(text: &str) -> Option<Self> {
        let (since, rest) = text.rsplit_once('/')?;
        let (count, partial) = match rest.split_once('+') {
            Some((count, bytes)) => (count, Some(bytes.parse().ok()?)),
            None => (rest, None),
        };
        let prefix = count.parse().ok()?;
        Some(Self {
            since: Some(since.parse().ok()?),
            prefix,
            window: BTreeMap::new(),
            window_complete: prefix == 0,
            skip: 0,
            partial,
        })
    }

    /// The `sinceTime` a reconnect asks for now: whole seconds (the server truncates, and a
    /// client library may round), never earlier than the current one.
    fn next_since(&self) -> Option<Timestamp> {
        let newest = *self.window.last_key_value()?.0;
        let since = floor_to_second(newest)
            .checked_sub(SKEW_MARGIN)
            .unwrap_or(newest);
        Some(self.since.map_or(since, |current| current.max(since)))
    }

    /// Delivered entries stamped at or after `since` (the window must be complete).
    fn delivered_since(&self, since: Timestamp) -> u64 {
        self.window.range(since..).map(|(_, n)| n).sum()
    }

    /// Start a new connection: the `sinceTime` to ask for.
    pub(crate) fn reconnect(&mut self) -> Option<Timestamp> {
        if self.window_complete {
            if let Some(since) = self.next_since() {
                self.prefix = self.delivered_since(since);
                self.since = Some(since);
                self.window = self.window.split_off(&since);
            }
        } else {
            // Restored, or cut while skipping: learn the delivered entries again as they are
            // skipped.
            self.window.clear();
        }
        self.skip = self.prefix;
        self.since
    }

    /// The next entry of the connection, stamped `ts`: whether it was delivered before.
    pub(super) fn admit(&mut self, ts: Timestamp) -> Admit {
        if self.skip > 0 {
            self.skip -= 1;
            if !self.window_complete {
                *self.window.entry(ts).or_default() += 1;
                self.window_complete = self.skip == 0;
            }
            return match self.partial {
                // The last delivered entry is the one cut short.
                Some(bytes) if self.skip == 0 => Admit::ResumeAfter(bytes),
                _ => Admit::Drop,
            };
        }
        if self.since.is_none_or(|since| ts >= since) {
            self.prefix += 1;
        }
        *self.window.entry(ts).or_default() += 1;
        self.partial = None;
        self.prune();
        Admit::Deliver
    }

    /// The last delivered entry is unfinished: `bytes` of it are out.
    pub(super) fn partly_delivered(&mut self, bytes: u64) {
        self.partial = Some(bytes);
    }

    /// The last delivered entry is out whole.
    pub(super) fn wholly_delivered(&mut self) {
        self.partial = None;
    }

    /// Forget timestamps no later `sinceTime` can reach.
    fn prune(&mut self) {
        let Some((&newest, _)) = self.window.last_key_value() else {
            return;
        };
        let keep_from = newest
            .checked_sub(SKEW_MARGIN + SignedDuration::from_secs(1))
            .unwrap_or(newest);
        while self
            .window
            .first_key_value()
            .is_some_and(|(&oldest, _)| oldest < keep_from)
        {
            self.window.pop_first();
        }
    }
}

fn floor_to_second(ts: Timestamp) -> Timestamp {
    let nanos = ts.subsec_nanosecond();
    ts.checked_sub(i64::from(nanos).nanoseconds()).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::super::stamped::StampedLines;
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run(conn: &[&str], complete: bool, cursor: &mut LogCursor) -> String {
        StampedLines::default().connection(conn, complete, cursor)
    }

    #[test]
    fn reconnect_floors_since_time_and_drops_the_boundary_second() {
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.reconnect(), None);
        let first = run(
            &[
                "2026-11-27T14:37:43.100000000Z a\n2026-11-27T14:37:43.6",
                "00000000Z b\n",
            ],
            false,
            &mut cursor,
        );
        assert_eq!(first, "a\nb\n");
        assert_eq!(cursor.reconnect(), Some(ts("2026-11-27T14:37:41Z")));
        // The server sends the whole boundary second again.
        let second = run(
            &[
                "2026-11-27T14:37:43.100000000Z a\n2026-11-27T14:37:43.600000000Z b\n2026-11-27T14:37:44.000000001Z c\n",
            ],
            false,
            &mut cursor,
        );
        assert_eq!(second, "c\n");
    }

    #[test]
    fn equal_timestamps_are_told_apart_by_position() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.500000000Z";
        assert_eq!(
            run(&[&format!("{t} one\n{t} two\n")], false, &mut cursor),
            "one\ntwo\n"
        );
        cursor.reconnect();
        assert_eq!(
            run(
                &[&format!("{t} one\n{t} two\n{t} three\n")],
                false,
                &mut cursor
            ),
            "three\n"
        );
    }

    #[test]
    fn a_checkpoint_restores_the_cursor() {
        let mut cursor = LogCursor::default();
        let t = "2026-11-27T14:37:43.500000000Z";
        run(&[&format!("{t} one\n{t} two\n")], false, &mut cursor);
        let checkpoint = cursor.checkpoint().unwrap();
        let mut restored = LogCursor::from_checkpoint(&checkpoint).unwrap();
        assert_eq!(restored.reconnect(), Some(ts("2026-11-27T14:37:41Z")));
        assert_eq!(
            run(
                &[&format!("{t} one\n{t} two\n{t} three\n")],
                false,
                &mut restored
            ),
            "three\n"
        );
        assert!(LogCursor::from_checkpoint("garbage").is_none());
    }

    /// A log file of `(timestamp, line)` in file order, served like the kubelet: each entry
    /// filtered on its own by `sinceTime` truncated to the second, the file's order kept.
    fn serve(file: &[(&str, String)], since: Option<Timestamp>) -> String {
        let bound = since.map(floor_to_second);
        file.iter()
            .filter(|(t, _)| bound.is_none_or(|b| ts(t) >= b))
            .map(|(t, line)| format!("{t} {line}\n"))
            .collect()
    }

    /// stdout and stderr stamped each on its own and merged: later entries may carry earlier
    /// timestamps, across a second boundary too (as measured on v1.36 with containerd).
    fn interleaved() -> Vec<(&'static str, String)> {
        let stamps = [
            "2026-11-27T14:37:42.900000000Z",
            "2026-11-27T14:37:42.999000000Z",
            "2026-11-27T14:37:42.998000000Z",
            "2026-11-27T14:37:43.001000000Z",
            "2026-11-27T14:37:42.999500000Z",
            "2026-11-27T14:37:43.500000000Z",
            "2026-11-27T14:37:43.500000000Z",
            "2026-11-27T14:37:43.499000000Z",
            "2026-11-27T14:37:44.000000001Z",
            "2026-11-27T14:37:43.999000000Z",
            "2026-11-27T14:37:45.100000000Z",
            "2026-11-27T14:37:46.200000000Z",
            "2026-11-27T14:37:46.100000000Z",
            "2026-11-27T14:37:47.300000000Z",
        ];
        stamps
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, format!("line-{i}")))
            .collect()
    }

    fn all_lines(file: &[(&str, String)]) -> String {
        file.iter().map(|(_, line)| format!("{line}\n")).collect()
    }

    #[test]
    fn entries_stamped_earlier_than_the_one_before_are_delivered() {
        let file = interleaved();
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.reconnect(), None);
        let out = run(&[&serve(&file, None)], true, &mut cursor);
        assert_eq!(out, all_lines(&file), "nothing dropped for its timestamp");
    }

    #[test]
    fn a_reconnect_after_out_of_order_entries_continues_exactly_after_them() {
        let file = interleaved();
        // Cut the connection after every possible entry, twice in a row.
        for first in 0..=file.len() {
            for second in first..=file.len() {
                let mut cursor = LogCursor::default();
                let mut out = String::new();
                for cut in [first, second] {
                    let since = cursor.reconnect();
                    let answer = serve(&file, since);
                    let delivered_before = out.lines().count();
                    let upto: String = answer
                        .split_inclusive('\n')
                        .take(cut.saturating_sub(delivered_before) + answer_prefix(&answer, &out))
                        .collect();
                    out += &run(&[&upto], false, &mut cursor);
                }
                let since = cursor.reconnect();
                out += &run(&[&serve(&file, since)], true, &mut cursor);
                assert_eq!(out, all_lines(&file), "cut after {first} then {second}");
            }
        }
    }

    /// How many entries of `answer` were already delivered in `out` (they come back first).
    fn answer_prefix(answer: &str, out: &str) -> usize {
        let delivered: Vec<&str> = out.lines().collect();
        answer
            .lines()
            .filter_map(|entry| entry.split_once(' ').map(|(_, line)| line))
            .filter(|line| delivered.contains(line))
            .count()
    }

    #[test]
    fn a_checkpoint_taken_anywhere_resumes_without_loss_or_repeat() {
        let file = interleaved();
        for cut in 0..=file.len() {
            let mut cursor = LogCursor::default();
            cursor.reconnect();
            let head: String = serve(&file, None).split_inclusive('\n').take(cut).collect();
            let mut out = run(&[&head], false, &mut cursor);
            let mut restored = match cursor.checkpoint() {
                Some(checkpoint) => LogCursor::from_checkpoint(&checkpoint).unwrap(),
                None => LogCursor::default(),
            };
            // The restored cursor is cut once more before it relearned its window.
            let since = restored.reconnect();
            let partial: String = serve(&file, since).split_inclusive('\n').take(1).collect();
            out += &run(&[&partial], false, &mut restored);
            let since = restored.reconnect();
            out += &run(&[&serve(&file, since)], true, &mut restored);
            assert_eq!(out, all_lines(&file), "checkpoint after {cut} entries");
        }
    }

    #[test]
    fn the_window_of_delivered_timestamps_stays_bounded() {
        let mut cursor = LogCursor::default();
        let start = ts("2026-11-27T14:00:00Z");
        let mut conn = String::new();
        for i in 0..10_000_i64 {
            let t = start
                .checked_add(SignedDuration::from_millis(i * 10))
                .unwrap();
            conn += &format!("{t} line-{i}\n");
        }
        run(&[&conn], false, &mut cursor);
        // 100 entries a second, kept for the margin and one second more.
        assert!(cursor.window.len() <= 400, "{}", cursor.window.len());
        assert_eq!(cursor.reconnect(), Some(ts("2026-11-27T14:01:37Z")));
        assert_eq!(cursor.skip, 300);
    }

    #[test]
    fn floor_keeps_whole_seconds() {
        assert_eq!(
            floor_to_second(ts("2026-11-27T14:37:43.999999999Z")),
            ts("2026-11-27T14:37:43Z")
        );
        assert_eq!(
            floor_to_second(ts("2026-11-27T14:37:43Z")),
            ts("2026-11-27T14:37:43Z")
        );
    }
}
