//! Whether a run resumes its saved OpenCode session: the one place this is decided. The
//! manifest passes `--session` from it, the lifecycle picks the matching prompt and retries
//! fresh from it, and the JS layer asks it through the addon before building the prompt, so a
//! fresh session never gets the short resume prompt and a resumed one never gets skipped.
//!
//! Resuming a session from another directory hangs OpenCode, so a session is resumed only when
//! its saved cwd equals this run's cwd (both unknown counts as equal; one unknown does not).

use serde::Serialize;

/// Whether the run resumes a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum ResumeDecision {
    /// No saved session: a new one starts.
    New,
    /// `--session` is passed.
    Resumed {
        /// The session resumed.
        #[serde(rename = "sessionId")]
        session_id: String,
    },
    /// A saved session exists but is not resumed.
    Fresh {
        /// Why, in words for the run log.
        reason: String,
    },
}

impl ResumeDecision {
    /// Whether `--session` is passed.
    pub fn resumes(&self) -> bool {
        matches!(self, ResumeDecision::Resumed { .. })
    }
}

/// A saved session, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved<'a> {
    /// `ses_...`.
    pub session_id: &'a str,
    /// The cwd the session was created in, when known.
    pub cwd: Option<&'a str>,
}

/// Decides whether to resume `saved` in a run whose cwd is `cwd`; `enabled` is the agent's
/// `resumeLastSession`.
pub fn decide(saved: Option<Saved<'_>>, cwd: Option<&str>, enabled: bool) -> ResumeDecision {
    let Some(saved) = saved else {
        return ResumeDecision::New;
    };
    let id = saved.session_id;
    if !enabled {
        return ResumeDecision::Fresh {
            reason: format!(
                "saved session {id} is not resumed because resumeLastSession is false; starting a fresh session"
            ),
        };
    }
    if id.is_empty() || id.starts_with('-') || id.contains(char::is_whitespace) {
        return ResumeDecision::Fresh {
            reason: format!(
                "saved session id {id:?} is not a valid OpenCode session id; starting a fresh session"
            ),
        };
    }
    let norm = |p: Option<&str>| p.map(|p| p.trim_end_matches('/').to_owned());
    if norm(saved.cwd) == norm(cwd) {
        return ResumeDecision::Resumed {
            session_id: id.to_owned(),
        };
    }
    let show = |p: Option<&str>| p.map_or_else(|| "an unknown directory".to_owned(), str::to_owned);
    ResumeDecision::Fresh {
        reason: format!(
            "saved session {id} was created in {}, this run's cwd is {}; resuming from another directory hangs OpenCode, starting a fresh session",
            show(saved.cwd),
            show(cwd)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(cwd: Option<&str>) -> Option<Saved<'_>> {
        Some(Saved {
            session_id: "ses_1",
            cwd,
        })
    }

    #[test]
    fn a_trailing_slash_is_the_same_directory() {
        assert!(decide(saved(Some("/paperclip/w/")), Some("/paperclip/w"), true).resumes());
    }

    #[test]
    fn one_unknown_cwd_starts_fresh_with_a_reason_naming_both() {
        let ResumeDecision::Fresh { reason } = decide(saved(None), Some("/paperclip/w"), true)
        else {
            panic!("expected fresh");
        };
        assert!(
            reason.contains("an unknown directory") && reason.contains("/paperclip/w"),
            "{reason}"
        );
    }
}
