//! Engine and client diagnostics (`tracing`) on stderr as plain lines an operator can read in
//! a terminal or a log file alike: `[opencode-k8s] warning: <message>; <field>: <value>`, no
//! colour escapes, no timestamps (the run log around them has none either).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `warn` and up unless `OPENCODE_K8S_LOG` says otherwise (an `EnvFilter` directive such as
/// `opencode_k8s_core=debug`). kube-runtime's watcher logs its own copy of each watch error as
/// a `Debug` dump; the engine reports the same error readably, so only its errors show.
const DEFAULT_FILTER: &str = "warn,kube_runtime=error";

/// Installs the subscriber; diagnostics go to stderr.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENCODE_K8S_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(Plain)
        .with_writer(std::io::stderr)
        .init();
}

/// One event as one line: level, message, then the fields.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(writer, "[opencode-k8s] {level}: {}", fields.message)?;
        for (name, value) in &fields.others {
            write!(writer, "; {name}: {value}")?;
        }
        // Debug output is for whoever asked for it with OPENCODE_K8S_LOG: say where it is from.
        if *meta.level() >= Level::DEBUG {
            write!(writer, " ({})", meta.target())?;
        }
        writeln!(writer)
    }
}

/// The message and the other fields of one event, as readable text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, readable(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too, formatted with `Display`.
        self.record(field, readable(&format!("{value:?}")));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.push((field.name(), value));
        }
    }
}

/// `text` without the `(Status { … })` dumps kube-client appends to every API error's message
/// (`ApiError: <message> (<Debug of the Status>)`): the message already says it all.
fn readable(text: &str) -> String {
    const DUMP: &str = " (Status {";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(DUMP) {
        out.push_str(&rest[..start]);
        let dump = &rest[start + 2..];
        // The dump ends at the `)` after the brace that closes `Status {`.
        let mut depth = 0_usize;
        let mut end = None;
        for (i, c) in dump.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end.and_then(|i| dump[i + 1..].strip_prefix(')')) {
            Some(after) => rest = after,
            None => {
                // Not a dump after all: keep it as it is.
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_dumps_are_dropped_and_the_message_kept() {
        let text = "failed to perform initial object list: ApiError: events is forbidden: User \"x\" cannot list resource \"events\": Forbidden (Status { status: Some(Failure), code: 403, message: \"events is forbidden\", metadata: Some(ListMeta { continue_: None }), reason: \"Forbidden\", details: None })";
        assert_eq!(
            readable(text),
            "failed to perform initial object list: ApiError: events is forbidden: User \"x\" cannot list resource \"events\": Forbidden"
        );
        assert_eq!(readable("a (Status {b}) c (Status {d})"), "a c");
        assert_eq!(readable("unbalanced (Status { x"), "unbalanced (Status { x");
        assert_eq!(readable("plain text"), "plain text");
    }
}
