//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!exists`) and field selectors
//! (`=`, `==`, `!=` on dotted paths such as `metadata.name` or `involvedObject.uid`), parsed
//! from the query string and matched against stored JSON objects.

use serde_json::Value;

/// A selector that could not be parsed; the server answers 400 with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
pub(crate) struct SelectorError(String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed `labelSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

/// Splits on commas that are not inside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(s: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| SelectorError(whole.to_owned()))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl LabelSelector {
    /// Parses upstream's selector syntax; an empty string selects everything.
    pub(crate) fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError(s.to_owned()));
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                (key.trim().to_owned(), LabelOp::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_owned(), LabelOp::NotEq(v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_owned(), LabelOp::Eq(v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_owned(), LabelOp::Eq(v.trim().to_owned()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_owned(), LabelOp::NotIn(parse_set(rest, part)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_owned(), LabelOp::In(parse_set(rest, part)?))
            } else if part.contains(char::is_whitespace) || part.contains('(') {
                return Err(SelectorError(part.to_owned()));
            } else {
                (part.to_owned(), LabelOp::Exists)
            };
            if req.0.is_empty() {
                return Err(SelectorError(part.to_owned()));
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.reqs.iter().all(|(key, op)| {
            let value = labels.get(key).and_then(Value::as_str);
            match op {
                LabelOp::Eq(v) => value == Some(v.as_str()),
                LabelOp::NotEq(v) => value != Some(v.as_str()),
                LabelOp::In(set) => value.is_some_and(|x| set.iter().any(|s| s == x)),
                LabelOp::NotIn(set) => value.is_none_or(|x| !set.iter().any(|s| s == x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
            }
        })
    }
}

/// A parsed `fieldSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `path=value,path!=value`; an empty string selects everything.
    pub(crate) fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in s.split(',') {
            let (path, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError(part.to_owned()));
            };
            reqs.push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector { reqs })
    }

    /// Whether the object's fields at each dotted path equal (or not) the wanted values.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, equal, wanted)| {
            let found = path
                .split('.')
                .try_fold(obj, |v, seg| v.get(seg))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (found == *wanted) == *equal
        })
    }

    /// The value `metadata.name=` pins, used to skip scanning a whole namespace.
    pub(crate) fn pinned_name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(path, equal, _)| *equal && path == "metadata.name")
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "n", "labels": {"job-name": "j", "tier": "a"}},
               "involvedObject": {"kind": "Pod", "name": "p"}})
    }

    #[test]
    fn label_operators_select_like_upstream() {
        let cases = [
            ("job-name=j", true),
            ("job-name==j", true),
            ("job-name!=j", false),
            ("tier in (a,b)", true),
            ("tier notin (a,b)", false),
            ("tier notin (b)", true),
            ("job-name", true),
            ("!job-name", false),
            ("missing", false),
            ("!missing", true),
            ("job-name=j,tier in (x, a)", true),
            ("", true),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel).unwrap();
            assert_eq!(parsed.matches(&pod()), want, "{sel}");
        }
        assert!(LabelSelector::parse("tier in a").is_err());
    }

    #[test]
    fn field_selectors_follow_dotted_paths() {
        let yes = FieldSelector::parse("metadata.name=p,involvedObject.kind=Pod").unwrap();
        assert!(yes.matches(&pod()));
        let no = FieldSelector::parse("involvedObject.name!=p").unwrap();
        assert!(!no.matches(&pod()));
        assert_eq!(yes.pinned_name(), Some("p"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
