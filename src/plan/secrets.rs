//! Secrets: where their values come from, and how they are kept out of
//! everything a person or a file sees.
//!
//! A secret named `KES_PASSWORD` is read from the environment variable of
//! that name, else from the file of that name in the inventory's
//! `secrets_dir`. Every value handed out is remembered, so that the
//! [`Redactor`] can replace it with `***` wherever a rendered command or a
//! command's output is shown, logged, journaled or reported, including in
//! the quoted forms the templates' filters give it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::quote::{ps_quote, sh_quote};
use crate::transport::Secret;

/// What to do when a secret is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSecrets {
    /// A real run: a missing secret is an error.
    Fail,
    /// Dry runs and validation: stand in `***` and remember the name, so a
    /// plan can be shown on a machine that holds no secrets.
    Placeholder,
}

pub const MASK: &str = "***";

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
}

impl SecretStore {
    pub fn new(dir: Option<PathBuf>, missing: MissingSecrets) -> Arc<SecretStore> {
        Arc::new(SecretStore {
            dir,
            missing,
            state: Mutex::new(State::default()),
        })
    }

    /// The value of secret `name`, or an error that says where it was looked for.
    pub fn get(&self, name: &str) -> Result<Secret, String> {
        let mut state = self.state.lock().expect("secret store lock");
        if let Some(value) = state.values.get(name) {
            return Ok(value.clone());
        }
        if let Some(value) = self.lookup(name) {
            state.values.insert(name.to_string(), value.clone());
            return Ok(value);
        }
        match self.missing {
            MissingSecrets::Placeholder => {
                state.not_found.insert(name.to_string(), ());
                Ok(Secret::new(MASK))
            }
            MissingSecrets::Fail => Err(self.not_set(name)),
        }
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
        let state = self.state.lock().expect("secret store lock");
        state.not_found.keys().cloned().collect()
    }

    /// A redactor for every secret handed out so far.
    pub fn redactor(&self) -> Redactor {
        let state = self.state.lock().expect("secret store lock");
        Redactor::new(state.values.values().map(|s| s.expose().to_string()))
    }

    fn count(&self) -> usize {
        self.state.lock().expect("secret store lock").values.len()
    }
}

/// A redactor that also knows the secrets fetched after it was made: a
/// template rendered at run time may read a secret no plan-time template
/// read, and its value must be masked all the same.
pub struct LiveRedactor {
    store: Arc<SecretStore>,
    cache: Mutex<(usize, Redactor)>,
}

impl LiveRedactor {
    pub fn new(store: Arc<SecretStore>) -> LiveRedactor {
        let redactor = store.redactor();
        let count = store.count();
        LiveRedactor {
            store,
            cache: Mutex::new((count, redactor)),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let count = self.store.count();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != count {
            *cache = (count, self.store.redactor());
        }
        cache.1.redact(text)
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

/// Replaces secret values in text with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a value containing another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut needles: Vec<String> = Vec::new();
        for value in values {
            if value.is_empty() || value == MASK {
                continue;
            }
            // The value as the filters write it inside quotes, too: a secret
            // holding a quote would otherwise show through its quoted form.
            let quoted_inner = |q: String| q[1..q.len() - 1].to_string();
            for form in [
                value.clone(),
                quoted_inner(sh_quote(&value)),
                quoted_inner(ps_quote(&value)),
            ] {
                if !needles.contains(&form) {
                    needles.push(form);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }

    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact(&String::from_utf8_lossy(bytes))
    }
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
    fn redacts_values_and_their_quoted_forms() {
        let r = Redactor::new(["s3cr'et".to_string(), "pa$$".to_string()]);
        assert_eq!(r.redact("KLPASSWD=s3cr'et /qn"), "KLPASSWD=*** /qn");
        assert_eq!(r.redact("KLPASSWD='s3cr''et'"), "KLPASSWD='***'");
        assert_eq!(r.redact("echo 's3cr'\\''et'"), "echo '***'");
        assert_eq!(r.redact("x pa$$ y pa$$"), "x *** y ***");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_longer_secret_is_redacted_whole() {
        let r = Redactor::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(r.redact("abcdef abc"), "*** ***");
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
        assert_eq!(store.get("NOT_SET_ANYWHERE_8Q").unwrap().expose(), MASK);
        assert_eq!(store.missing(), vec!["NOT_SET_ANYWHERE_8Q".to_string()]);
    }
}
