//! Secrets: where their values come from, and how they are kept out of
//! everything a person or a file sees.
//!
//! A secret named `KES_PASSWORD` is read from the environment variable of
//! that name, else from the file of that name in the inventory's
//! `secrets_dir`. Every value handed out is remembered, so that the
//! [`Redactor`] can replace it with `***` wherever a rendered command or a
//! command's output is shown, logged, journaled or reported, including in
//! the quoted forms the templates' filters give it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use super::redact::{MASK, MIN_SECRET_CHARS, Redactor};
use crate::transport::Secret;

/// What to do when a secret is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSecrets {
    /// A real run: a missing secret is an error.
    Fail,
    /// Dry runs and validation: stand in a placeholder (shown as `***`) and
    /// remember the name, so a plan can be shown on a machine that holds no
    /// secrets.
    Placeholder,
    /// Rehearsals: every secret is a stand-in, even one that is set, so a
    /// real secret never reaches the simulated fleet (or anything else).
    StandIn,
}

#[derive(Debug)]
pub struct SecretStore {
    dir: Option<PathBuf>,
    missing: MissingSecrets,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    values: BTreeMap<String, Secret>,
    not_found: BTreeMap<String, ()>,
    /// Forms that filters made of a secret while templates rendered (a
    /// chain such as `regex_escape | sh_quote`), masked like the values.
    derived: BTreeSet<String>,
    /// Bumped whenever a value or form is added: the cached redactor is
    /// rebuilt only then.
    generation: u64,
    redactor: Option<(u64, Arc<Redactor>)>,
}

impl SecretStore {
    pub fn new(dir: Option<PathBuf>, missing: MissingSecrets) -> Arc<SecretStore> {
        Arc::new(SecretStore {
            dir,
            missing,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of secret `name`, or an error that says where it was
    /// looked for (or why it cannot be used). No error holds the value.
    pub fn get(&self, name: &str) -> Result<Secret, String> {
        let mut state = self.state();
        if let Some(value) = state.values.get(name) {
            return Ok(value.clone());
        }
        let found = match self.missing {
            MissingSecrets::StandIn => None,
            _ => self.lookup(name),
        };
        let value = match found {
            Some(value) => {
                let chars = value.expose().chars().count();
                if chars < MIN_SECRET_CHARS {
                    return Err(too_short(name, chars));
                }
                value
            }
            None => match self.missing {
                MissingSecrets::Placeholder | MissingSecrets::StandIn => {
                    state.not_found.insert(name.to_string(), ());
                    // A stand-in of its own per name, masked like a value:
                    // the checks that follow a secret through templates
                    // work on a machine that holds none.
                    Secret::new(format!("orchestrate-unset-secret-{name}"))
                }
                MissingSecrets::Fail => return Err(self.not_set(name)),
            },
        };
        state.values.insert(name.to_string(), value.clone());
        state.generation += 1;
        Ok(value)
    }

    fn lookup(&self, name: &str) -> Option<Secret> {
        if let Ok(value) = std::env::var(name) {
            return Some(Secret::new(value));
        }
        let dir = self.dir.as_ref()?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
    }

    fn not_set(&self, name: &str) -> String {
        match &self.dir {
            Some(dir) => format!(
                "secret `{name}` is not set: export the environment variable {name}, or put the value in {}",
                dir.join(name).display()
            ),
            None => format!(
                "secret `{name}` is not set: export the environment variable {name}, or give the inventory a secrets_dir holding a file named {name}"
            ),
        }
    }

    /// Names of secrets that a dry run could not find (worth a warning).
    pub fn missing(&self) -> Vec<String> {
        self.state().not_found.keys().cloned().collect()
    }

    /// Remembers forms a filter made of a secret, so they are masked too.
    pub fn add_forms(&self, forms: impl IntoIterator<Item = String>) {
        let mut state = self.state();
        for form in forms {
            if form.chars().count() >= MIN_SECRET_CHARS && state.derived.insert(form) {
                state.generation += 1;
            }
        }
    }

    /// A redactor for every secret handed out so far, and every form made
    /// of one. Built again only when one was added since.
    pub fn redactor(&self) -> Arc<Redactor> {
        let mut state = self.state();
        if let Some((generation, redactor)) = &state.redactor
            && *generation == state.generation
        {
            return Arc::clone(redactor);
        }
        let redactor = Arc::new(Redactor::with_forms(
            state.values.values().map(|s| s.expose().to_string()),
            state.derived.iter().cloned(),
        ));
        state.redactor = Some((state.generation, Arc::clone(&redactor)));
        redactor
    }
}

/// Why a short secret is refused (its length, never its value).
fn too_short(name: &str, chars: usize) -> String {
    format!(
        "secret `{name}` is {chars} character{} long; secrets shorter than {MIN_SECRET_CHARS} characters are refused, \
         since masking one in output gives it away (masking `e` turns `hello` into `h***llo`)",
        if chars == 1 { "" } else { "s" }
    )
}

/// A redactor that also knows the secrets fetched after it was made: a
/// template rendered at run time may read a secret no plan-time template
/// read, and its value must be masked all the same.
pub struct LiveRedactor {
    store: Arc<SecretStore>,
}

impl LiveRedactor {
    pub fn new(store: Arc<SecretStore>) -> LiveRedactor {
        LiveRedactor { store }
    }

    /// The redactor as of now.
    pub fn current(&self) -> Arc<Redactor> {
        self.store.redactor()
    }

    pub fn redact(&self, text: &str) -> String {
        self.current().redact(text)
    }

    /// Output bytes masked, then decoded: see [`Redactor::redact_to_text`].
    pub fn redact_to_text(&self, bytes: &[u8]) -> String {
        self.current().redact_to_text(bytes)
    }
}

/// The secrets a template asks for, as far as can be told from its text:
/// `secret(name="X")` gives `Literal("X")`, `secret(name=var)` gives
/// `Variable("var")` (whose value names the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Literal(String),
    Variable(String),
}

pub fn secret_refs(template: &str) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("secret(") {
        rest = &rest[at + "secret(".len()..];
        let args = rest.trim_start();
        let Some(after_name) = args.strip_prefix("name") else {
            continue;
        };
        let Some(value) = after_name.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let mut chars = value.chars();
        match chars.next() {
            Some(q @ ('"' | '\'')) => {
                if let Some(end) = value[1..].find(q) {
                    refs.push(SecretRef::Literal(value[1..1 + end].to_string()));
                }
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let name: String = value
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                refs.push(SecretRef::Variable(name));
            }
            _ => {}
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_in_template_text() {
        let refs = secret_refs(
            r#"a {{ secret(name="KES_PASSWORD") | ps_quote }} b {{ secret( name = pw_name ) }} {{ secret(name='X') }}"#,
        );
        assert_eq!(
            refs,
            vec![
                SecretRef::Literal("KES_PASSWORD".into()),
                SecretRef::Variable("pw_name".into()),
                SecretRef::Literal("X".into())
            ]
        );
    }

    #[test]
    fn a_live_redactor_masks_secrets_fetched_after_it_was_made() {
        let store = SecretStore::new(None, MissingSecrets::Fail);
        let live = LiveRedactor::new(Arc::clone(&store));
        // SAFETY: the variable is unique to this test.
        unsafe { std::env::set_var("LATE_SECRET_9Z", "late-value-9z") };
        store.get("LATE_SECRET_9Z").unwrap();
        assert_eq!(live.redact("x late-value-9z"), "x ***");
    }

    #[test]
    fn secrets_come_from_the_environment_then_the_folder() {
        let dir = std::env::temp_dir().join(format!("orchestrate-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("FROM_FILE_ONLY_7Q"), "filevalue\n").unwrap();
        let store = SecretStore::new(Some(dir.clone()), MissingSecrets::Fail);
        assert_eq!(
            store.get("FROM_FILE_ONLY_7Q").unwrap().expose(),
            "filevalue"
        );
        let err = store.get("NOT_SET_ANYWHERE_7Q").unwrap_err();
        assert!(err.contains("NOT_SET_ANYWHERE_7Q") && err.contains(&dir.display().to_string()));
        assert!(
            store.get("../etc/passwd").is_err(),
            "names cannot leave the folder"
        );
        assert_eq!(store.redactor().redact("x filevalue y"), "x *** y");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dry_runs_stand_in_a_mask_and_remember_the_name() {
        let store = SecretStore::new(None, MissingSecrets::Placeholder);
        let stand_in = store.get("NOT_SET_ANYWHERE_8Q").unwrap();
        assert_eq!(store.missing(), vec!["NOT_SET_ANYWHERE_8Q".to_string()]);
        assert_eq!(
            store
                .redactor()
                .redact(&format!("pw={}", stand_in.expose())),
            "pw=***"
        );
    }

    #[test]
    fn a_secret_shorter_than_four_characters_is_refused_without_its_value() {
        // SAFETY: the variables are unique to this test.
        unsafe {
            std::env::set_var("SHORT_SECRET_3C", "xq7");
            std::env::set_var("LONG_ENOUGH_4C", "xq7z");
        }
        for missing in [MissingSecrets::Fail, MissingSecrets::Placeholder] {
            let store = SecretStore::new(None, missing);
            let err = store.get("SHORT_SECRET_3C").unwrap_err();
            assert!(
                err.contains("`SHORT_SECRET_3C` is 3 characters long"),
                "{err}"
            );
            assert!(!err.contains("xq7"), "{err}");
            assert_eq!(store.get("LONG_ENOUGH_4C").unwrap().expose(), "xq7z");
        }
    }

    #[test]
    fn forms_added_by_filters_are_masked_from_then_on() {
        let store = SecretStore::new(None, MissingSecrets::Fail);
        let live = LiveRedactor::new(Arc::clone(&store));
        assert_eq!(live.redact("a\\.b\\.c9"), "a\\.b\\.c9");
        store.add_forms(["a\\.b\\.c9".to_string(), "ab".to_string()]);
        assert_eq!(
            live.redact("x a\\.b\\.c9 ab"),
            "x *** ab",
            "too short to mask alone"
        );
    }
}
