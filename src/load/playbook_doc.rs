//! Playbooks as written: types that mirror the YAML one to one.
//!
//! Every struct denies unknown keys, so a typo is an error at its line and
//! column; values that need a place in later errors are `Spanned`. Nothing
//! here checks meaning: [`super::playbook`] turns these into the model.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::playbook::{CaptureFormat, Mark, Vars};
use super::values::{HumanDuration, Pause, Size};
use crate::transport::Os;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PlaybookDoc {
    /// What the playbook does, shown in plans and reports.
    pub(super) name: String,
    /// A longer description, for people.
    #[serde(default)]
    pub(super) description: Option<String>,
    /// The OSes the playbook is for (`windows`, `linux`, `macos`, or a list); hosts of other OSes are skipped. Default: all.
    #[serde(default)]
    pub(super) os: Option<OneOrMany<Os>>,
    /// Template variables, the lowest level: the inventory's defaults, client and host vars override them.
    #[serde(default)]
    pub(super) vars: Vars,
    /// Sizes of the waves per client, as counts or shares (`[1, "10%", "100%"]`). Default: `[1, "100%"]`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<Size>>")]
    pub(super) waves: Option<Spanned<Vec<Size>>>,
    /// Between two waves: a duration, or `confirm`. Default: no pause.
    #[serde(default)]
    pub(super) pause_between_waves: Option<Pause>,
    /// Failed hosts a client may have before it halts: a count or a share. Default: 0.
    #[serde(default)]
    pub(super) failure_budget: Option<Size>,
    /// Hosts at once per client. Default: 20.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub(super) concurrency: Option<Spanned<u32>>,
    /// Steps run on a failed host after its rollback, last (may `include:` files of steps).
    #[serde(default)]
    #[schemars(with = "Vec<StepDoc>")]
    pub(super) on_failure: Vec<Spanned<StepDoc>>,
    /// The phases, in order; each `include:` inserts the phases of a file.
    #[schemars(with = "Vec<PhaseDoc>")]
    pub(super) phases: Spanned<Vec<Spanned<PhaseDoc>>>,
    /// Run every step as the inventory's `become` user (sudo) on POSIX hosts. Default: false.
    #[serde(default, rename = "become")]
    pub(super) r#become: Option<bool>,
    /// Probes run on every host before anything changes and again at the end, compared item by item; each `include:` inserts the probes of a file.
    #[serde(default)]
    #[schemars(with = "Vec<super::baseline::ProbeDoc>")]
    pub(super) baseline: Vec<Spanned<super::baseline::ProbeDoc>>,
}

/// The keys that make a step's action; a step has exactly one.
pub(super) const ACTIONS: [&str; 8] = [
    "run",
    "sh",
    "powershell",
    "cmd",
    "script",
    "upload",
    "reboot",
    "wait",
];

/// A phase, or `include:` of a file of phases (then only `vars` may be
/// beside it). One struct for both, not an untagged enum, so that a typo
/// in either is still an "unknown field" at its own line and column.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = phase_or_include)]
pub(super) struct PhaseDoc {
    /// The phase's name, unique in the playbook.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) name: Option<Spanned<String>>,
    /// The phase's steps, in order; each `include:` inserts the steps of a file.
    #[serde(default)]
    #[schemars(with = "Option<Vec<StepDoc>>")]
    pub(super) steps: Option<Vec<Spanned<StepDoc>>>,
    /// A file of phases (a YAML list) to insert here, relative to this file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) include: Option<Spanned<String>>,
    /// With `include`: variables bound for the included phases only.
    #[serde(default)]
    #[schemars(with = "Option<Vars>")]
    pub(super) vars: Option<Spanned<Vars>>,
    /// Run this phase's steps as the inventory's `become` user. Default: inherited.
    #[serde(default, rename = "become")]
    pub(super) r#become: Option<bool>,
}

/// A step, or `include:` of a file of steps (then only `vars` may be
/// beside it): one struct for both, as for a phase.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(transform = one_action_or_include)]
pub(super) struct StepDoc {
    /// A file of steps (a YAML list) to insert here, relative to this file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) include: Option<Spanned<String>>,
    /// With `include`: variables bound for the included steps only; they win over every other level.
    #[serde(default)]
    #[schemars(with = "Option<Vars>")]
    pub(super) vars: Option<Spanned<Vars>>,
    /// Shown in plans and reports. Default: the action and its first line.
    #[serde(default)]
    pub(super) name: Option<String>,
    /// Run this step's actions as the inventory's `become` user (sudo). Default: inherited.
    #[serde(default, rename = "become")]
    pub(super) r#become: Option<bool>,
    /// A command in the host's shell (`sh`, or PowerShell on Windows).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) run: Option<Spanned<String>>,
    /// A POSIX shell script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) sh: Option<Spanned<String>>,
    /// A PowerShell script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) powershell: Option<Spanned<String>>,
    /// A cmd.exe command.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) cmd: Option<Spanned<String>>,
    /// A file beside this one, uploaded, run with `args`, and removed.
    #[serde(default)]
    pub(super) script: Option<ScriptDoc>,
    /// Copy a file from the controller to the host.
    #[serde(default)]
    pub(super) upload: Option<UploadDoc>,
    /// Reboot the host and wait for it to come back.
    #[serde(default)]
    pub(super) reboot: Option<RebootDoc>,
    /// Wait this long.
    #[serde(default)]
    pub(super) wait: Option<HumanDuration>,
    /// Only on hosts of these OSes.
    #[serde(default)]
    pub(super) os: Option<OneOrMany<Os>>,
    /// A condition (Tera expression); the step runs only when it holds.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) when: Option<Spanned<String>>,
    /// The longest the step may take; its process group is killed then.
    #[serde(default)]
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    /// How many more times to try a failing step. Default: 0.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub(super) retries: Option<Spanned<u32>>,
    /// Between tries. Default: 5s.
    #[serde(default)]
    pub(super) retry_delay: Option<HumanDuration>,
    /// With retries: success also needs this condition (it may read `result.exit_code`, `result.stdout`, `result.stderr`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) until: Option<Spanned<String>>,
    /// Exit codes that mean success. Default: [0].
    #[serde(default)]
    #[schemars(with = "Option<Vec<i32>>")]
    pub(super) ok_codes: Option<Spanned<Vec<i32>>>,
    /// Exit codes that mean success, then reboot and go on.
    #[serde(default)]
    #[schemars(with = "Option<Vec<i32>>")]
    pub(super) reboot_codes: Option<Spanned<Vec<i32>>>,
    /// Keep the step's output in a variable for later steps.
    #[serde(default)]
    pub(super) capture: Option<CaptureDoc>,
    /// Steps that undo this one, run if the host fails later (may `include:` files of steps).
    #[serde(default)]
    #[schemars(with = "Vec<StepDoc>")]
    pub(super) rollback: Vec<Spanned<StepDoc>>,
    /// Read-only: `--check` runs it. Default: false.
    #[serde(default)]
    pub(super) check_safe: bool,
    /// Its output is never stored or shown. Default: false.
    #[serde(default)]
    pub(super) sensitive: bool,
    /// `protection_off` or `protection_on`: the protection gap runs between them; `restores_unsupported_product` (rollback and on_failure steps): it puts back a product that no longer gets updates.
    #[serde(default)]
    pub(super) marks: Option<Mark>,
}

/// What the loader checks beyond the keys' types, said in the schema so an
/// editor flags it too: a phase has a name, or is an include with only
/// `vars` beside it.
fn phase_or_include(schema: &mut Schema) {
    schema.insert(
        "oneOf".into(),
        serde_json::json!([
            { "required": ["name"], "not": { "required": ["include"] } },
            include_only(),
        ]),
    );
}

/// A step has exactly one action, or is an include with only `vars`.
fn one_action_or_include(schema: &mut Schema) {
    let mut branches: Vec<serde_json::Value> = ACTIONS
        .iter()
        .map(|a| {
            // `run: ~` is no action: an optional key may be null, an action may not.
            serde_json::json!({
                "required": [a],
                "properties": { *a: { "not": { "type": "null" } } },
                "not": { "required": ["include"] }
            })
        })
        .collect();
    branches.push(include_only());
    schema.insert("oneOf".into(), branches.into());
}

fn include_only() -> serde_json::Value {
    serde_json::json!({
        "required": ["include"],
        "propertyNames": { "enum": ["include", "vars"] }
    })
}

impl StepDoc {
    /// The keys written besides `include` and `vars`, for "an include
    /// takes no other keys" errors.
    pub(super) fn step_keys(&self) -> Vec<&'static str> {
        let set = [
            ("name", self.name.is_some()),
            ("run", self.run.is_some()),
            ("sh", self.sh.is_some()),
            ("powershell", self.powershell.is_some()),
            ("cmd", self.cmd.is_some()),
            ("script", self.script.is_some()),
            ("upload", self.upload.is_some()),
            ("reboot", self.reboot.is_some()),
            ("wait", self.wait.is_some()),
            ("os", self.os.is_some()),
            ("when", self.when.is_some()),
            ("timeout", self.timeout.is_some()),
            ("retries", self.retries.is_some()),
            ("retry_delay", self.retry_delay.is_some()),
            ("until", self.until.is_some()),
            ("ok_codes", self.ok_codes.is_some()),
            ("reboot_codes", self.reboot_codes.is_some()),
            ("capture", self.capture.is_some()),
            ("rollback", !self.rollback.is_empty()),
            ("check_safe", self.check_safe),
            ("sensitive", self.sensitive),
            ("marks", self.marks.is_some()),
            ("become", self.r#become.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScriptDoc {
    #[schemars(with = "String")]
    pub(super) src: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) args: Vec<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadDoc {
    #[schemars(with = "String")]
    pub(super) src: Spanned<String>,
    #[schemars(with = "String")]
    pub(super) dest: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RebootDoc {
    #[serde(default)]
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CaptureDoc {
    #[serde(rename = "as")]
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    #[serde(default = "default_capture_format")]
    pub(super) parse: CaptureFormat,
}

pub(super) fn default_capture_format() -> CaptureFormat {
    CaptureFormat::Text
}

/// `windows` or `[windows, linux]`.
pub(crate) struct OneOrMany<T>(pub Vec<T>);

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({ "anyOf": [one, { "type": "array", "items": one }] })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}
