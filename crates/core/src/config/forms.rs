//! Reading one field in every form the Paperclip UI sends, collecting errors instead of
//! stopping at the first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use serde_json::{Map, Value};

use super::fields::{FieldKind, spec};
use super::{ENGINE_OWNED_ENV, FieldError, Quantity, SecretString, syntax};

/// `opencode run` flags the engine sets itself, with why they cannot be passed in `extraArgs`.
const ENGINE_OWNED_FLAGS: &[(&[&str], &str)] = &[
    (&["--format"], "the engine always reads `--format json`"),
    (&["--model", "-m"], "set `model` instead"),
    (&["--variant"], "set `variant` instead"),
    (
        &["--session", "-s", "--continue", "-c", "--fork"],
        "sessions are resumed by the engine (`resumeLastSession`)",
    ),
    (
        &["--attach", "--port", "--dir", "--interactive", "-i"],
        "the pod runs its own OpenCode in the run's cwd without a terminal",
    ),
    (
        &["--help", "-h", "--version", "-v"],
        "it would not run the agent",
    ),
];

const TOLERATION_KEYS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];
const EFFECTS: &[&str] = &["", "NoSchedule", "PreferNoSchedule", "NoExecute"];
const SHOWN_CHARS: usize = 60;

/// A bad value for an error message: strings quoted, other JSON compact, both shortened.
pub(super) fn show(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    shorten(&text)
}

fn show_str(s: &str) -> String {
    shorten(&format!("{s:?}"))
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `provider/model`: both parts non-empty, no whitespace. The model part may contain `/`.
pub(super) fn valid_model(s: &str) -> bool {
    matches!(s.split_once('/'), Some((p, m)) if !p.is_empty() && !m.is_empty())
        && !s.contains(char::is_whitespace)
}

/// `http://host...` or `https://host...` without whitespace.
pub(super) fn valid_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
        && !s.contains(char::is_whitespace)
}

/// Reads fields of one `adapterConfig` object and accumulates [`FieldError`]s.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(obj: &'a Map<String, Value>) -> Self {
        Self {
            obj,
            errors: Vec::new(),
        }
    }

    /// The errors in table order, and within a field by position (`line 2` before `line 10`).
    pub(super) fn finish(mut self) -> Vec<FieldError> {
        self.errors
            .sort_by_cached_key(|e| (field_index(&e.path), natural_key(&e.path)));
        self.errors
    }

    /// The value at a field path (the flat dotted key, else nested objects), treating `null`
    /// and blank strings as absent: the UI sends `""` for a cleared field.
    pub(super) fn raw(&self, name: &str) -> Option<&'a Value> {
        let value = self.obj.get(name).or_else(|| {
            let mut parts = name.split('.');
            let first = self.obj.get(parts.next()?)?;
            parts.try_fold(first, |v, part| v.as_object()?.get(part))
        })?;
        match value {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            v => Some(v),
        }
    }

    /// A nested group (`resources`) present but not an object would silently give every field
    /// under it its default: refuse it by name.
    pub(super) fn object_parent(&mut self, path: &str) {
        let mut parts = path.split('.');
        let first = parts.next().and_then(|p| self.obj.get(p));
        let value = parts
            .try_fold(first, |v, part| Some(v?.as_object()?.get(part)))
            .flatten();
        if let Some(value) = value
            && !value.is_object()
            && !value.is_null()
            && !value.as_str().is_some_and(|s| s.trim().is_empty())
        {
            self.fail_with(path, show(value), "an object of the fields below it".into());
        }
    }

    /// `networkPolicyEgress`: `CIDR` or `CIDR:port[,port...]` entries, as an array or text
    /// separated by whitespace or new lines.
    pub(super) fn egress(&mut self, name: &str) -> Vec<super::EgressRule> {
        let Some(value) = self.raw(name) else {
            return Vec::new();
        };
        let items: Vec<(String, Value)> = match value {
            Value::String(text) => text
                .split_whitespace()
                .enumerate()
                .map(|(i, s)| (format!("{name}[{i}]"), Value::String(s.to_owned())))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{name}[{i}]"), v.clone()))
                .collect(),
            other => {
                self.fail(name, show(other));
                return Vec::new();
            }
        };
        let mut rules = Vec::new();
        for (path, item) in items {
            match item.as_str().and_then(super::egress::parse) {
                Some(rule) => rules.push(rule),
                None => self.fail_with(&path, show(&item), spec(name).accepted.into()),
            }
        }
        rules
    }

    /// Records an error at a table field with the table's accepted text.
    pub(super) fn fail(&mut self, name: &str, value: String) {
        self.fail_with(name, value, spec(name).accepted.to_owned());
    }

    pub(super) fn fail_with(&mut self, path: &str, value: String, accepted: String) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            value,
            accepted,
        });
    }

    /// A trimmed one-line string (numbers accepted as their text) that passes `valid`.
    pub(super) fn text(&mut self, name: &str, valid: impl Fn(&str) -> bool) -> Option<String> {
        let value = self.raw(name)?;
        let text = match value {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            other => {
                self.fail(name, show(other));
                return None;
            }
        };
        if valid(&text) {
            Some(text)
        } else {
            self.fail(name, show(value));
            None
        }
    }

    /// A string kept exactly as sent (templates, kubeconfig text).
    pub(super) fn verbatim(&mut self, name: &str) -> Option<String> {
        match self.raw(name)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.fail(name, show(other));
                None
            }
        }
    }

    /// One of the field's choices, matched case-insensitively, in its canonical spelling.
    pub(super) fn choice(&mut self, name: &str) -> Option<&'static str> {
        let FieldKind::Choice(choices) = spec(name).kind else {
            unreachable!("{name} is not a choice field")
        };
        let value = self.raw(name)?;
        let found = value
            .as_str()
            .and_then(|s| choices.iter().find(|c| c.eq_ignore_ascii_case(s.trim())));
        if found.is_none() {
            self.fail(name, show(value));
        }
        found.copied()
    }

    /// A whole number in `0..=max`, from a JSON number or a string of digits.
    pub(super) fn integer(&mut self, name: &str, default: u64, max: u64) -> u64 {
        let Some(value) = self.raw(name) else {
            return default;
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
                    .map(|f| f as u64)
            }),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed.filter(|n| *n <= max) {
            Some(n) => n,
            None => {
                self.fail(name, show(value));
                default
            }
        }
    }

    /// A boolean from `true`/`false`, `0`/`1`, or the strings `true|false|yes|no|on|off|1|0`.
    pub(super) fn boolean(&mut self, name: &str, default: bool) -> bool {
        let Some(value) = self.raw(name) else {
            return default;
        };
        let parsed = match value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(true),
                "false" | "no" | "off" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        parsed.unwrap_or_else(|| {
            self.fail(name, show(value));
            default
        })
    }

    /// A positive quantity, the table default when absent, `None` (error recorded) when bad.
    pub(super) fn quantity(&mut self, name: &str) -> Option<Quantity> {
        let Some(value) = self.raw(name) else {
            return Some(default_quantity(name));
        };
        let text = match value {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        match Quantity::parse(&text) {
            Ok(q) if q.is_positive() => Some(q),
            _ => {
                self.fail(name, show(value));
                None
            }
        }
    }

    /// The `key=value` pairs of a map field sent as an object, JSON text or lines, with the
    /// path each pair is reported under. `split_commas` also splits lines at `,`.
    fn pairs(&mut self, name: &str, split_commas: bool) -> Vec<(String, String, Value)> {
        let Some(value) = self.raw(name) else {
            return Vec::new();
        };
        let parsed_text;
        let value = match value {
            Value::String(s) if s.trim_start().starts_with('{') => {
                match serde_json::from_str::<Value>(s) {
                    Ok(v) => {
                        parsed_text = v;
                        &parsed_text
                    }
                    Err(e) => {
                        self.fail_with(
                            name,
                            format!("JSON text that does not parse ({e})"),
                            spec(name).accepted.into(),
                        );
                        return Vec::new();
                    }
                }
            }
            v => v,
        };
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (format!("{name}.{k}"), k.clone(), v.clone()))
                .collect(),
            Value::String(text) => self.line_pairs(name, text, split_commas),
            other => {
                self.fail(name, show(other));
                Vec::new()
            }
        }
    }

    /// The `key=value` pairs of map field `name` written as lines (and, with `split_commas`,
    /// comma-separated items); blank items and `#` comments are skipped.
    fn line_pairs(
        &mut self,
        name: &str,
        text: &str,
        split_commas: bool,
    ) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let items: Vec<&str> = if split_commas {
                line.split(',').collect()
            } else {
                vec![line]
            };
            for item in items {
                let item = item.trim();
                if item.is_empty() || item.starts_with('#') {
                    continue;
                }
                let path = format!("{name} (line {})", i + 1);
                match item.split_once('=') {
                    Some((k, v)) => out.push((
                        path,
                        k.trim().to_owned(),
                        Value::String(unquote(v).to_owned()),
                    )),
                    // The line may be a secret pasted in the wrong place: show its length only.
                    None => self.fail_with(
                        &path,
                        format!("a line of {} characters without `=`", item.chars().count()),
                        spec(name).accepted.into(),
                    ),
                }
            }
        }
        out
    }

    /// `env`: names checked, engine-owned names refused, values kept secret.
    pub(super) fn env(&mut self, name: &str) -> BTreeMap<String, SecretString> {
        let mut env = BTreeMap::new();
        for (path, key, value) in self.pairs(name, false) {
            let path = if path.contains("(line") {
                path
            } else {
                format!("{name}.{key}")
            };
            if !syntax::is_env_name(&key) {
                self.fail_with(
                    &path,
                    show_str(&key),
                    "a variable name matching [A-Za-z_][A-Za-z0-9_]*".into(),
                );
                continue;
            }
            if let Some((_, why)) = ENGINE_OWNED_ENV.iter().find(|(n, _)| *n == key) {
                self.fail_with(
                    &path,
                    show_str(&key),
                    format!("a variable the engine does not set itself ({why})"),
                );
                continue;
            }
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("secret_ref") => {
                    self.fail_with(&path, "an unresolved secret reference".into(), "a plain value; Paperclip resolves secret references before the run, so check that the secret exists".into());
                    continue;
                }
                Value::Object(o) if o.get("value").is_some_and(Value::is_string) => {
                    o["value"].as_str().unwrap_or_default().to_owned()
                }
                _ => {
                    self.fail_with(
                        &path,
                        format!("a JSON {}", json_type(&value)),
                        "a string, number or boolean value".into(),
                    );
                    continue;
                }
            };
            if key == "OPENCODE_CONFIG_CONTENT"
                && !serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object())
            {
                self.fail_with(
                    &path,
                    format!("{} bytes that are not a JSON object", text.len()),
                    "OpenCode config as a JSON object (merged with the permission bypass)".into(),
                );
                continue;
            }
            env.insert(key, SecretString::new(text));
        }
        env
    }

    /// `labels` / `nodeSelector`: Kubernetes label keys and values; `reserved` keys refused.
    pub(super) fn label_map(
        &mut self,
        name: &str,
        reserved: fn(&str) -> bool,
    ) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (path, key, value) in self.pairs(name, true) {
            let path = if path.contains("(line") {
                path
            } else {
                format!("{name}.{key}")
            };
            let text = match &value {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.fail_with(&path, show(other), "a string value".into());
                    continue;
                }
            };
            if !syntax::is_qualified_name(&key) {
                self.fail_with(&path, show_str(&key), "a label key: [prefix/]name, name up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric".into());
            } else if reserved(&key) {
                self.fail_with(&path, show_str(&key), "a label key outside the reserved prefixes (kubernetes.io/, k8s.io/, paperclip.io/ and their subdomains, opencode-k8s.dev/) and not app.kubernetes.io/managed-by or app.kubernetes.io/name".into());
            } else if !syntax::is_label_value(&text) {
                self.fail_with(&path, show_str(&text), "a label value: up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric, or empty".into());
            } else {
                map.insert(key, text);
            }
        }
        map
    }

    /// `tolerations`: an array, one object, or JSON/YAML text of either.
    pub(super) fn tolerations(&mut self, name: &str) -> Vec<Toleration> {
        let Some(value) = self.raw(name) else {
            return Vec::new();
        };
        let parsed;
        let value = match value {
            Value::String(text) => match serde_saphyr::from_str::<Value>(text) {
                Ok(v) => {
                    parsed = v;
                    &parsed
                }
                Err(e) => {
                    let first_line = e.to_string().lines().next().unwrap_or_default().to_owned();
                    self.fail_with(
                        name,
                        format!("text that is neither JSON nor YAML ({first_line})"),
                        spec(name).accepted.into(),
                    );
                    return Vec::new();
                }
            },
            v => v,
        };
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![value],
            Value::Null => Vec::new(),
            other => {
                self.fail(name, show(other));
                return Vec::new();
            }
        };
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| self.toleration(&format!("{name}[{i}]"), item))
            .collect()
    }

    /// One toleration at `path`; `None` when it has a problem (recorded).
    fn toleration(&mut self, path: &str, item: &Value) -> Option<Toleration> {
        let Some(obj) = item.as_object() else {
            self.fail_with(
                path,
                show(item),
                "an object with key, operator, value, effect, tolerationSeconds".into(),
            );
            return None;
        };
        let before = self.errors.len();
        for k in obj
            .keys()
            .filter(|k| !TOLERATION_KEYS.contains(&k.as_str()))
        {
            self.fail_with(
                &format!("{path}.{k}"),
                "an unknown toleration field".into(),
                "one of key, operator, value, effect, tolerationSeconds".into(),
            );
        }
        let mut string = |field: &str| -> Option<String> {
            match obj.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.trim().to_owned()),
                Some(other) => {
                    self.fail_with(&format!("{path}.{field}"), show(other), "a string".into());
                    None
                }
            }
        };
        let key = string("key").unwrap_or_default();
        let operator = string("operator").unwrap_or_else(|| "Equal".into());
        let value = string("value").unwrap_or_default();
        let effect = string("effect").unwrap_or_default();
        self.check_toleration(path, &key, &operator, &value, &effect);
        let seconds = self.toleration_seconds(path, obj.get("tolerationSeconds"), &effect);
        (self.errors.len() == before).then(|| Toleration {
            key: (!key.is_empty()).then_some(key),
            operator: Some(operator),
            value: (!value.is_empty()).then_some(value),
            effect: (!effect.is_empty()).then_some(effect),
            toleration_seconds: seconds,
        })
    }

    /// Records what is wrong with a toleration's key, operator, value and effect, and how they
    /// go together.
    fn check_toleration(
        &mut self,
        path: &str,
        key: &str,
        operator: &str,
        value: &str,
        effect: &str,
    ) {
        if !key.is_empty() && !syntax::is_qualified_name(key) {
            self.fail_with(
                &format!("{path}.key"),
                show_str(key),
                "a label key, or empty to match every key with operator Exists".into(),
            );
        }
        match operator {
            "Exists" if !value.is_empty() => self.fail_with(
                &format!("{path}.value"),
                show_str(value),
                "no value with operator Exists".into(),
            ),
            "Equal" if key.is_empty() => self.fail_with(
                &format!("{path}.operator"),
                show_str(operator),
                "Exists when key is empty".into(),
            ),
            "Exists" | "Equal" => {}
            _ => self.fail_with(
                &format!("{path}.operator"),
                show_str(operator),
                "Exists or Equal".into(),
            ),
        }
        if !syntax::is_label_value(value) {
            self.fail_with(
                &format!("{path}.value"),
                show_str(value),
                "a label value".into(),
            );
        }
        if !EFFECTS.contains(&effect) {
            self.fail_with(
                &format!("{path}.effect"),
                show_str(effect),
                "NoSchedule, PreferNoSchedule, NoExecute, or empty for all".into(),
            );
        }
    }

    /// A toleration's `tolerationSeconds`: a whole number (or its text), only with NoExecute.
    fn toleration_seconds(
        &mut self,
        path: &str,
        value: Option<&Value>,
        effect: &str,
    ) -> Option<i64> {
        let v = value.filter(|v| !v.is_null())?;
        let n = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        if n.is_none() || effect != "NoExecute" {
            self.fail_with(
                &format!("{path}.tolerationSeconds"),
                show(v),
                "a whole number of seconds, only with effect NoExecute".into(),
            );
        }
        n
    }

    /// `extraArgs`: an array of strings, or text split like a POSIX shell does (`shlex`:
    /// whitespace separates, quotes group, backslash escapes, `#` starts a comment).
    /// Engine-owned flags are refused.
    pub(super) fn args(&mut self, name: &str) -> Vec<String> {
        let Some(value) = self.raw(name) else {
            return Vec::new();
        };
        let args = match value {
            Value::String(text) => match shlex::split(text) {
                Some(args) => args,
                None => {
                    self.fail(
                        name,
                        "text with an unclosed quote or a trailing backslash".into(),
                    );
                    return Vec::new();
                }
            },
            Value::Array(items) => {
                let mut args = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => args.push(s.clone()),
                        Value::Number(n) => args.push(n.to_string()),
                        other => {
                            self.fail_with(&format!("{name}[{i}]"), show(other), "a string".into())
                        }
                    }
                }
                args
            }
            other => {
                self.fail(name, show(other));
                return Vec::new();
            }
        };
        for (i, arg) in args.iter().enumerate() {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
            if let Some((_, why)) = ENGINE_OWNED_FLAGS
                .iter()
                .find(|(flags, _)| flags.contains(&flag))
            {
                self.fail_with(
                    &format!("{name}[{i}]"),
                    show_str(arg),
                    format!("a flag the engine does not set itself ({why})"),
                );
            }
        }
        args
    }
}

/// Position in [`FIELDS`](super::FIELDS) of the field a path belongs to.
fn field_index(path: &str) -> usize {
    super::FIELDS
        .iter()
        .position(|f| {
            path.strip_prefix(f.name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[', ' ']))
        })
        .unwrap_or(usize::MAX)
}

/// A sort key comparing digit runs as numbers.
fn natural_key(path: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let text_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (text, tail) = rest.split_at(text_len);
        let digits_len = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (digits, tail) = tail.split_at(digits_len);
        key.push((text.to_owned(), digits.parse().unwrap_or(0)));
        rest = tail;
    }
    key
}

pub(super) fn default_quantity(name: &str) -> Quantity {
    let text = spec(name).default.unwrap_or("0");
    Quantity::parse(text).unwrap_or_else(|e| panic!("default of {name} in FIELDS: {e}"))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Strips one pair of matching surrounding quotes, as `.env` files allow.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_shortens_long_values() {
        let shown = show(&Value::String("x".repeat(200)));
        assert_eq!(shown.chars().count(), SHOWN_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn url_and_model_forms() {
        assert!(valid_http_url("http://paperclip.paperclip.svc:3100"));
        assert!(!valid_http_url("paperclip:3100"));
        assert!(!valid_http_url("http://"));
        assert!(valid_model("openrouter/anthropic/claude"));
        assert!(!valid_model("claude"));
        assert!(!valid_model("/x"));
    }
}
