//! The baseline's data: what a probe saw (its items), and what differs
//! between before and after, judged against the probe's `expect`.
//!
//! Pure functions over text, apart from the transports and the host's run
//! ([`super::host`] runs the probes), so the rules are tested here alone.
//! An item has an identity (`id`: the line, or with `parse: json` its
//! `key` field) and a text (the line, or the element's fields written
//! `Name=value`, space-separated, in order): patterns match the text, and
//! an item whose id stays but whose text differs has changed.
//!
//! What crosses into events is bounded whatever the endpoint prints: at
//! most [`MAX_ITEMS`] items a probe, [`MAX_TEXT`] characters an item, and
//! [`MAX_LISTED`] entries in each list of a difference (the rest counted).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::{OnRegression, Pattern, Probe, ProbeFormat};

/// More items than this is a probe that prints the wrong thing.
pub const MAX_ITEMS: usize = 10_000;
/// An item's text is cut to this many characters.
pub const MAX_TEXT: usize = 400;
/// Each list of a difference names at most this many items.
pub const MAX_LISTED: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub text: String,
}

/// One probe's result on one host, before the change (journaled, so a
/// resumed host compares with what it was before it was first touched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSnapshot {
    pub probe: String,
    #[serde(default)]
    pub on_regression: OnRegression,
    /// `None` when the probe failed (then `error` says why).
    pub items: Option<Vec<Item>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineStatus {
    /// Recorded only (`--check`, or the host stopped before the end).
    Recorded,
    /// Nothing differs.
    Unchanged,
    /// Only what `expect` allows differs.
    Expected,
    /// Something differs that `expect` does not allow.
    Regressed,
    /// The probe failed, before or after.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemChange {
    pub item: String,
    pub before: String,
    pub after: String,
}

/// What differs for one probe on one host (the report's `baseline[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDiff {
    pub probe: String,
    pub status: BaselineStatus,
    pub on_regression: OnRegression,
    pub items_before: Option<usize>,
    pub items_after: Option<usize>,
    pub appeared: Vec<String>,
    pub disappeared: Vec<String>,
    pub changed: Vec<ItemChange>,
    /// The differences `expect` does not allow: `lost ...`, `gained ...`,
    /// `changed ...`.
    pub regressions: Vec<String>,
    /// Entries left out of the lists above (past [`MAX_LISTED`] each).
    #[serde(default)]
    pub omitted: usize,
    pub error: Option<String>,
}

impl ProbeDiff {
    /// Only recorded (before, or a probe that failed before).
    pub fn recorded(snapshot: &ProbeSnapshot) -> ProbeDiff {
        ProbeDiff {
            probe: snapshot.probe.clone(),
            status: if snapshot.error.is_some() {
                BaselineStatus::Error
            } else {
                BaselineStatus::Recorded
            },
            on_regression: snapshot.on_regression,
            items_before: snapshot.items.as_ref().map(Vec::len),
            items_after: None,
            appeared: Vec::new(),
            disappeared: Vec::new(),
            changed: Vec::new(),
            regressions: Vec::new(),
            omitted: 0,
            error: snapshot.error.clone(),
        }
    }

    /// Fails the host: a regression (or an error) on a `fail` probe.
    pub fn fails_host(&self) -> bool {
        self.on_regression == OnRegression::Fail
            && matches!(
                self.status,
                BaselineStatus::Regressed | BaselineStatus::Error
            )
    }

    /// Flags the host: a regression (or an error) on a `warn` probe.
    pub fn warns(&self) -> bool {
        self.on_regression == OnRegression::Warn
            && matches!(
                self.status,
                BaselineStatus::Regressed | BaselineStatus::Error
            )
    }

    /// One line: the probe and what went wrong with it.
    pub fn summary(&self) -> String {
        match &self.error {
            Some(error) => format!("baseline `{}`: {error}", self.probe),
            None => {
                let shown: Vec<&str> = self
                    .regressions
                    .iter()
                    .take(3)
                    .map(String::as_str)
                    .collect();
                let more = self.regressions.len().saturating_sub(shown.len());
                format!(
                    "baseline `{}`: {}{}",
                    self.probe,
                    shown.join("; "),
                    if more > 0 {
                        format!(" (and {more} more)")
                    } else {
                        String::new()
                    }
                )
            }
        }
    }
}

/// A probe's output as items. `redact` masks secrets in each item.
pub fn items(
    probe: &Probe,
    output: &str,
    redact: impl Fn(&str) -> String,
) -> Result<Vec<Item>, String> {
    let mut items: Vec<Item> = match probe.parse {
        ProbeFormat::Lines => output
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| Item {
                id: l.to_string(),
                text: l.to_string(),
            })
            .collect(),
        ProbeFormat::Json => {
            let text = output.trim_start_matches('\u{feff}').trim();
            // PowerShell's ConvertTo-Json prints nothing for no items.
            let value: Value = if text.is_empty() {
                Value::Array(Vec::new())
            } else {
                serde_json::from_str(text).map_err(|e| {
                    let preview: String = text.chars().take(80).collect();
                    format!("the output is not JSON ({e}): {preview}")
                })?
            };
            // ConvertTo-Json of a single object is that object, not a list.
            let elements = match value {
                Value::Array(elements) => elements,
                Value::Null => Vec::new(),
                one => vec![one],
            };
            elements
                .iter()
                .map(|element| json_item(element, probe.key.as_deref()))
                .collect::<Result<_, _>>()?
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(format!(
            "{} items, more than the {MAX_ITEMS} a probe may have; make it print less",
            items.len()
        ));
    }
    for item in &mut items {
        item.id = cut(&redact(&item.id));
        item.text = cut(&redact(&item.text));
    }
    Ok(items)
}

fn json_item(element: &Value, key: Option<&str>) -> Result<Item, String> {
    let text = match element {
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    };
    let id = match key {
        None => text.clone(),
        Some(key) => match element.get(key) {
            Some(v) if !v.is_null() => scalar(v),
            _ => {
                let preview: String = text.chars().take(80).collect();
                return Err(format!(
                    "an item has no `{key}` (the probe's key): {preview}"
                ));
            }
        },
    };
    Ok(Item { id, text })
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_TEXT - 1).collect();
    cut.push('…');
    cut
}

/// What differs between `before` and `after`, judged by the probe's `expect`.
pub fn compare(probe: &Probe, before: &[Item], after: &[Item]) -> ProbeDiff {
    let index = |items: &[Item]| -> IndexMap<String, String> {
        items
            .iter()
            .map(|i| (i.id.clone(), i.text.clone()))
            .collect()
    };
    let (was, now) = (index(before), index(after));
    let allowed = |patterns: &[Pattern], texts: &[&str]| {
        patterns.iter().any(|p| texts.iter().any(|t| p.matches(t)))
    };
    let mut diff = ProbeDiff {
        probe: probe.name.clone(),
        status: BaselineStatus::Unchanged,
        on_regression: probe.on_regression,
        items_before: Some(before.len()),
        items_after: Some(after.len()),
        appeared: Vec::new(),
        disappeared: Vec::new(),
        changed: Vec::new(),
        regressions: Vec::new(),
        omitted: 0,
        error: None,
    };
    for (id, text) in &now {
        if !was.contains_key(id) {
            diff.appeared.push(text.clone());
            if !allowed(&probe.expect.appear, &[text, id]) {
                diff.regressions.push(format!("gained {text}"));
            }
        }
    }
    for (id, text) in &was {
        match now.get(id) {
            None => {
                diff.disappeared.push(text.clone());
                if !allowed(&probe.expect.disappear, &[text, id]) {
                    diff.regressions.push(format!("lost {text}"));
                }
            }
            Some(after) if after != text => {
                diff.changed.push(ItemChange {
                    item: id.clone(),
                    before: text.clone(),
                    after: after.clone(),
                });
                if !allowed(&probe.expect.change, &[text, after, id]) {
                    diff.regressions
                        .push(format!("changed {id}: {text} → {after}"));
                }
            }
            Some(_) => {}
        }
    }
    diff.status = if !diff.regressions.is_empty() {
        BaselineStatus::Regressed
    } else if diff.appeared.is_empty() && diff.disappeared.is_empty() && diff.changed.is_empty() {
        BaselineStatus::Unchanged
    } else {
        BaselineStatus::Expected
    };
    for list in [
        &mut diff.appeared,
        &mut diff.disappeared,
        &mut diff.regressions,
    ] {
        if list.len() > MAX_LISTED {
            diff.omitted += list.len() - MAX_LISTED;
            list.truncate(MAX_LISTED);
        }
    }
    if diff.changed.len() > MAX_LISTED {
        diff.omitted += diff.changed.len() - MAX_LISTED;
        diff.changed.truncate(MAX_LISTED);
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Expect, Pattern};

    fn probe(parse: ProbeFormat, key: Option<&str>, expect: Expect) -> Probe {
        let source = crate::load::SourceFile {
            path: "pb.yml".into(),
            text: std::sync::Arc::new(String::new()),
            included_from: Default::default(),
        };
        let playbook = crate::load::parse_playbook(crate::load::SourceFile {
            text: std::sync::Arc::new(
                "name: x\nbaseline:\n  - { name: p, sh: 'true' }\nphases: [{ name: a, steps: [] }]\n"
                    .into(),
            ),
            ..source
        })
        .unwrap();
        let mut probe = playbook.baseline[0].clone();
        probe.parse = parse;
        probe.key = key.map(str::to_string);
        probe.expect = expect;
        probe
    }

    fn patterns(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(p).unwrap()).collect()
    }

    fn same(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn a_lost_port_is_a_regression_and_the_old_products_are_expected() {
        let p = probe(
            ProbeFormat::Lines,
            None,
            Expect {
                disappear: patterns(&["* klnagent*"]),
                appear: patterns(&["* clamd"]),
                ..Expect::default()
            },
        );
        let before = items(
            &p,
            "tcp 0.0.0.0:22 sshd\ntcp 0.0.0.0:15000 klnagent\ntcp 0.0.0.0:1433 sqlservr\n",
            same,
        )
        .unwrap();
        let after = items(&p, "tcp 0.0.0.0:22 sshd\ntcp 127.0.0.1:3310 clamd\n", same).unwrap();
        let diff = compare(&p, &before, &after);
        assert_eq!(diff.appeared, ["tcp 127.0.0.1:3310 clamd"]);
        assert_eq!(
            diff.disappeared,
            ["tcp 0.0.0.0:15000 klnagent", "tcp 0.0.0.0:1433 sqlservr"]
        );
        assert_eq!(diff.regressions, ["lost tcp 0.0.0.0:1433 sqlservr"]);
        assert_eq!(diff.status, BaselineStatus::Regressed);
        assert!(diff.fails_host());
    }

    #[test]
    fn json_items_by_key_change_and_a_single_object_is_one_item() {
        let p = probe(
            ProbeFormat::Json,
            Some("Name"),
            Expect {
                change: patterns(&["Name=Public *"]),
                ..Expect::default()
            },
        );
        let before = items(
            &p,
            r#"[{"Name":"Domain","Enabled":true,"InboundRules":12},{"Name":"Public","Enabled":true,"InboundRules":3}]"#,
            same,
        )
        .unwrap();
        assert_eq!(before[0].text, "Name=Domain Enabled=true InboundRules=12");
        let after = items(
            &p,
            r#"[{"Name":"Domain","Enabled":false,"InboundRules":12},{"Name":"Public","Enabled":true,"InboundRules":4}]"#,
            same,
        )
        .unwrap();
        let diff = compare(&p, &before, &after);
        assert_eq!(diff.changed.len(), 2);
        assert_eq!(
            diff.regressions,
            [
                "changed Domain: Name=Domain Enabled=true InboundRules=12 → Name=Domain Enabled=false InboundRules=12"
            ]
        );
        let one = items(&p, r#"{"Name":"Domain","Enabled":true}"#, same).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(items(&p, "", same).unwrap(), []);
        assert!(
            items(&p, r#"[{"Enabled":true}]"#, same)
                .unwrap_err()
                .contains("no `Name`")
        );
    }

    #[test]
    fn unchanged_expected_and_bounded() {
        let p = probe(
            ProbeFormat::Lines,
            None,
            Expect {
                appear: patterns(&["new*"]),
                ..Expect::default()
            },
        );
        let a = items(&p, "x\ny\n", same).unwrap();
        assert_eq!(compare(&p, &a, &a).status, BaselineStatus::Unchanged);
        let b = items(&p, "x\ny\nnew thing\n", same).unwrap();
        assert_eq!(compare(&p, &a, &b).status, BaselineStatus::Expected);
        let many: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let diff = compare(&p, &[], &items(&p, &many, same).unwrap());
        assert_eq!(diff.appeared.len(), MAX_LISTED);
        assert_eq!(diff.regressions.len(), MAX_LISTED);
        assert_eq!(diff.omitted, 2 * (500 - MAX_LISTED));
        let long = "z".repeat(5000);
        assert_eq!(
            items(&p, &long, same).unwrap()[0].text.chars().count(),
            MAX_TEXT
        );
        let masked = items(&p, "token hunter2x", |s| s.replace("hunter2x", "***")).unwrap();
        assert_eq!(masked[0].text, "token ***");
    }
}
