//! Following a secret through the templates, so that whatever a template
//! makes of it can still be masked.
//!
//! `secret(name="X")` hands a template the value itself. The tool's own
//! filters (`sh_quote`, `ps_quote`, `regex_escape`, `json`) rewrite it, a
//! character at a time, in ways the redactor knows ([`SecretFilter`]):
//! when one of them sees a secret form in its input, it tells the store what
//! it made of that form, so chains (`regex_escape | sh_quote`) are masked
//! too. Every other filter (Tera's `upper`, `replace`, `escape`, `trim`,
//! `int`...) could make a form nobody can predict, so a secret may not go
//! through one:
//! - written directly after `secret(...)`, that is an error when the
//!   playbook is compiled, at the filter's line and column ([`misused_filter`]);
//! - conditions (`when`, `until`) are exempt: they render only `true` or
//!   `false`, so nothing of the secret can show;
//! - reached any other way (`{% set pw = secret(...) %}{{ pw | upper }}`),
//!   Tera's filters are wrapped ([`guard_builtin_filters`]) to refuse an
//!   input holding a secret, which fails the render (at plan time for every
//!   template that does not wait for a captured value).
//!
//! Tera keeps its built-in filters private, so a wrapper cannot call the
//! original directly; it asks a plain Tera instance to apply it, through
//! [`State::call_filter`], which is Tera's own way for a filter to call
//! another.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tera::{Context, Kwargs, State, Tera, Value};

use super::redact::SecretFilter;
use super::secrets::SecretStore;

/// Tera 2.4's built-in filters (`Tera::register_builtin_filters`).
const BUILTIN_FILTERS: &[&str] = &[
    "safe",
    "default",
    "upper",
    "lower",
    "wordcount",
    "escape",
    "escape_html",
    "escape_xml",
    "newlines_to_br",
    "pluralize",
    "trim",
    "trim_start",
    "trim_end",
    "replace",
    "capitalize",
    "title",
    "truncate",
    "indent",
    "str",
    "int",
    "float",
    "length",
    "reverse",
    "split",
    "abs",
    "round",
    "first",
    "last",
    "nth",
    "join",
    "sort",
    "unique",
    "get",
    "values",
    "keys",
    "pairs",
    "group_by",
];

/// Why a secret may not go through `filter`.
pub fn refusal(filter: &str) -> String {
    format!(
        "a secret cannot go through the filter `{filter}`: what it makes of the value could not be masked in output; \
         a secret may go only through {} (or straight into the command)",
        SecretFilter::allowed_list()
    )
}

/// The first filter written directly after a `secret(...)` call in `text`
/// that a secret may not go through: its byte offset and name.
pub fn misused_filter(text: &str) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("secret(") {
        let start = from + found;
        from = start + "secret(".len();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if start > 0 && word(bytes[start - 1]) {
            continue;
        }
        let mut at = skip_group(bytes, start + "secret".len());
        loop {
            at = skip_space(bytes, at);
            if bytes.get(at) != Some(&b'|') {
                break;
            }
            at = skip_space(bytes, at + 1);
            let name_start = at;
            while at < bytes.len() && word(bytes[at]) {
                at += 1;
            }
            let name = &text[name_start..at];
            if !SecretFilter::ALL.iter().any(|f| f.name() == name) {
                return Some((name_start, name.to_string()));
            }
            at = skip_space(bytes, at);
            if bytes.get(at) == Some(&b'(') {
                at = skip_group(bytes, at);
            }
        }
    }
    None
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && bytes[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

/// From an opening `(` at `at`, the offset just after its closing `)`
/// (quoted strings skipped).
fn skip_group(bytes: &[u8], mut at: usize) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    while at < bytes.len() {
        let c = bytes[at];
        at += 1;
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' => depth += 1,
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return at;
                    }
                }
                _ => {}
            },
        }
    }
    at
}

/// Every string in `value` (map keys included): where a secret could be.
fn texts_in(value: &Value, into: &mut Vec<String>) {
    if let Some(s) = value.as_str() {
        into.push(s.to_string());
    } else if let Some(items) = value.as_array() {
        items.iter().for_each(|item| texts_in(item, into));
    } else if let Some(map) = value.as_map() {
        for (key, item) in map.iter() {
            into.push(key.to_string());
            texts_in(item, into);
        }
    } else if value.is_number() || value.is_bool() {
        into.push(value.to_string());
    }
}

fn holds_secret(secrets: &SecretStore, value: &Value) -> bool {
    let redactor = secrets.redactor();
    let mut texts = Vec::new();
    texts_in(value, &mut texts);
    texts.iter().any(|t| redactor.finds_secret(t.as_bytes()))
}

/// Called by the tool's own filters with their input: what `filter` makes
/// of each secret form in it is masked from now on.
pub fn note_filtered(secrets: &SecretStore, filter: SecretFilter, input: &Value) {
    let redactor = secrets.redactor();
    let mut texts = Vec::new();
    texts_in(input, &mut texts);
    let made: Vec<String> = texts
        .iter()
        .flat_map(|t| redactor.forms_in(t))
        .map(|form| filter.inner(&form))
        .collect();
    if !made.is_empty() {
        secrets.add_forms(made);
    }
}

/// Replaces each of Tera's built-in filters in `tera` by one that refuses
/// an input holding a secret and otherwise does what the original does.
pub fn guard_builtin_filters(tera: &mut Tera, secrets: Arc<SecretStore>) {
    let originals = Arc::new(Builtins::new());
    for &name in BUILTIN_FILTERS {
        let secrets = Arc::clone(&secrets);
        let originals = Arc::clone(&originals);
        tera.register_filter(name, move |value: Value, kwargs: Kwargs, _: &State| {
            if GUARDED.with(|g| g.get()) && holds_secret(&secrets, &value) {
                return Err(tera::Error::message(refusal(name)));
            }
            originals.apply(name, value, kwargs)
        });
    }
}

thread_local! {
    /// Off while a condition renders: it shows nothing but `true` or `false`.
    static GUARDED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `render` with the built-in filters unguarded.
pub fn unguarded<T>(render: impl FnOnce() -> T) -> T {
    with_guard(false, render)
}

/// Whether the built-in filters are guarded on this thread now (handed to
/// the thread a template renders on, see `render_workers`).
pub fn guarded_now() -> bool {
    GUARDED.with(|g| g.get())
}

/// Runs `render` with the built-in filters guarded or not.
pub fn with_guard<T>(guarded: bool, render: impl FnOnce() -> T) -> T {
    let before = GUARDED.with(|g| g.replace(guarded));
    let result = render();
    GUARDED.with(|g| g.set(before));
    result
}

/// A plain Tera instance, used only to apply its built-in filters.
struct Builtins {
    tera: Tera,
}

/// The filter call in flight, and its result, handed to and from the
/// function that runs inside [`Builtins`]' template. Rendering is
/// synchronous, on this thread.
type Call = (&'static str, Value, Kwargs);
thread_local! {
    static CALL: RefCell<Option<Call>> = const { RefCell::new(None) };
    static RESULT: RefCell<Option<tera::TeraResult<Value>>> = const { RefCell::new(None) };
}

const APPLY: &str = "apply";

impl Builtins {
    fn new() -> Builtins {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&'static str>::new());
        tera.register_function("__apply", |_: Kwargs, state: &State| {
            if let Some((name, value, kwargs)) = CALL.with(|c| c.borrow_mut().take()) {
                let result = state.call_filter(name, &value, kwargs);
                RESULT.with(|r| *r.borrow_mut() = Some(result));
            }
            Value::from("")
        });
        tera.add_raw_template(APPLY, "{{ __apply() }}")
            .expect("the apply template compiles");
        Builtins { tera }
    }

    fn apply(&self, name: &'static str, value: Value, kwargs: Kwargs) -> tera::TeraResult<Value> {
        CALL.with(|c| *c.borrow_mut() = Some((name, value, kwargs)));
        let rendered = self.tera.render(APPLY, &Context::new());
        let result = RESULT.with(|r| r.borrow_mut().take());
        rendered?;
        result.unwrap_or_else(|| Err(tera::Error::message(format!("filter `{name}` did not run"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_written_after_a_secret_are_checked() {
        assert_eq!(misused_filter(r#"{{ secret(name="PW") }}"#), None);
        assert_eq!(
            misused_filter(
                r#"x {{ secret(name="PW") | ps_quote }} {{ secret(name = 'Q)') | regex_escape | sh_quote }}"#
            ),
            None
        );
        let text = r#"a {{ secret(name="PW") | sh_quote | upper }}"#;
        let (at, name) = misused_filter(text).unwrap();
        assert_eq!((name.as_str(), &text[at..at + 5]), ("upper", "upper"));
        let text = r#"{{ secret(name="PW")|replace(from="a", to="b") }}"#;
        assert_eq!(
            misused_filter(text).map(|(_, n)| n).as_deref(),
            Some("replace")
        );
        // Not a call of `secret`; and a filter on what follows `~` is not on the secret.
        assert_eq!(misused_filter(r#"{{ my_secret(x) | upper }}"#), None);
        assert_eq!(
            misused_filter(r#"{{ secret(name="PW") ~ "x" | upper }}"#),
            None
        );
    }

    #[test]
    fn guarded_builtins_behave_as_tera_s_own() {
        let store = SecretStore::new(None, super::super::MissingSecrets::Fail);
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&'static str>::new());
        guard_builtin_filters(&mut tera, store);
        let mut context = Context::new();
        context.insert("items", &vec!["b", "a", "c"]);
        context.insert("word", "Hello World");
        let out = tera
            .render_str(
                "{{ items | sort | join(sep=',') }} {{ word | upper }} {{ word | replace(from='o', to='0') }} {{ items | length }} {{ missing | default(value='d') }} {{ word | split(pat=' ') | first }}",
                &context,
                false,
            )
            .unwrap();
        assert_eq!(out, "a,b,c HELLO WORLD Hell0 W0rld 3 d Hello");
        let err = tera
            .render_str("{{ word | int }}", &context, false)
            .unwrap_err();
        assert!(format!("{err:?}").contains("int") || !err.to_string().is_empty());
    }
}
