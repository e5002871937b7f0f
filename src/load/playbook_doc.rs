//! Playbooks as written: types that mirror the YAML one to one.
//!
//! Every struct denies unknown keys, so a typo is an error at its line and
//! column; values that need a place in later errors are `Spanned`. Nothing
//! here checks meaning: [`super::playbook`] turns these into the model.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::playbook::{CaptureFormat, Mark, Vars};
use super::values::{HumanDuration, Pause, Size};
use crate::transport::Os;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlaybookDoc {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) os: Option<OneOrMany<Os>>,
    #[serde(default)]
    pub(super) vars: Vars,
    #[serde(default)]
    pub(super) waves: Option<Spanned<Vec<Size>>>,
    #[serde(default)]
    pub(super) pause_between_waves: Option<Pause>,
    #[serde(default)]
    pub(super) failure_budget: Option<Size>,
    #[serde(default)]
    pub(super) concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) on_failure: Vec<Spanned<StepDoc>>,
    pub(super) phases: Spanned<Vec<Spanned<PhaseDoc>>>,
}

/// A phase, or `include:` of a file of phases (then only `vars` may be
/// beside it). One struct for both, not an untagged enum, so that a typo
/// in either is still an "unknown field" at its own line and column.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PhaseDoc {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) steps: Option<Vec<Spanned<StepDoc>>>,
    #[serde(default)]
    pub(super) include: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vars: Option<Spanned<Vars>>,
}

/// A step, or `include:` of a file of steps (then only `vars` may be
/// beside it): one struct for both, as for [`PhaseDoc`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepDoc {
    #[serde(default)]
    pub(super) include: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vars: Option<Spanned<Vars>>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) run: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sh: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) powershell: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) cmd: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) script: Option<ScriptDoc>,
    #[serde(default)]
    pub(super) upload: Option<UploadDoc>,
    #[serde(default)]
    pub(super) reboot: Option<RebootDoc>,
    #[serde(default)]
    pub(super) wait: Option<HumanDuration>,
    #[serde(default)]
    pub(super) os: Option<OneOrMany<Os>>,
    #[serde(default)]
    pub(super) when: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(super) retries: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) retry_delay: Option<HumanDuration>,
    #[serde(default)]
    pub(super) until: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ok_codes: Option<Spanned<Vec<i32>>>,
    #[serde(default)]
    pub(super) reboot_codes: Option<Spanned<Vec<i32>>>,
    #[serde(default)]
    pub(super) capture: Option<CaptureDoc>,
    #[serde(default)]
    pub(super) rollback: Vec<Spanned<StepDoc>>,
    #[serde(default)]
    pub(super) check_safe: bool,
    #[serde(default)]
    pub(super) sensitive: bool,
    #[serde(default)]
    pub(super) marks: Option<Mark>,
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
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScriptDoc {
    pub(super) src: Spanned<String>,
    #[serde(default)]
    pub(super) args: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadDoc {
    pub(super) src: Spanned<String>,
    pub(super) dest: Spanned<String>,
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RebootDoc {
    #[serde(default)]
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaptureDoc {
    #[serde(rename = "as")]
    pub(super) name: Spanned<String>,
    #[serde(default = "default_capture_format")]
    pub(super) parse: CaptureFormat,
}

pub(super) fn default_capture_format() -> CaptureFormat {
    CaptureFormat::Text
}

/// `windows` or `[windows, linux]`.
pub(crate) struct OneOrMany<T>(pub Vec<T>);

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
