//! The template engine of playbooks: Tera 2 with our filters and functions.
//!
//! Every template of a playbook (each command, `when`, `until`, script
//! argument…) is compiled once, under a key naming the step and the field,
//! and rendered per host. Compiling up front is what lets a syntax error
//! fail the whole plan before anything connects, and lets the planner ask
//! which variables a template reads: a template that reads a value captured
//! by an earlier step can only be rendered at run time, and is marked so.
//!
//! Errors are mapped from the template's own line and column back to the
//! playbook's, so they point into the file the user edits.
//!
//! Rendering is bounded, so that a loop that never ends fails the plan
//! instead of hanging it: in what it writes ([`MAX_RENDERED_BYTES`]) and,
//! for a template that can loop ([`may_loop`]: a `for`, or anything but
//! the plain `if` and `set` tags), in time ([`MAX_RENDER_TIME`]): it
//! renders on a worker thread given up on at the deadline (see
//! [`super::render_workers`]), since a loop that writes nothing is never
//! seen by the output bound. The others, most of them, render here: the
//! hand-over to a worker costs more than they do.

use std::collections::HashMap;
use std::sync::Arc;

use tera::{Context, Kwargs, State, Tera, Value};

use super::glob::{glob_regex, mdatp_folder};
use super::redact::SecretFilter;
use super::render_workers::{RenderWorkers, Unfinished};
use super::secrets::SecretStore;
use super::template_secrets::{
    guard_builtin_filters, guarded_now, misused_filter, note_filtered, refusal, unguarded,
    with_guard,
};
use crate::load::{InputError, Place, SourceFile, Template, Vars};
use crate::quote::{ps_quote, regex_escape, sh_quote};

/// How a condition is wrapped into a template that renders `true` or `false`.
const CONDITION_PREFIX: &str = "{% if ";

pub struct Templates {
    /// Shared with the render workers (see [`Templates::render`]).
    tera: Arc<Tera>,
    /// Where each template was written, as written.
    written: HashMap<String, Written>,
    /// Templates that ran past a bound once, and why: they fail at once
    /// for the next host instead of costing every host the time limit.
    runaway: std::sync::Mutex<HashMap<String, String>>,
    /// Error messages are masked with it: Tera quotes values in them
    /// ("The string `...` cannot be converted").
    secrets: Arc<SecretStore>,
    workers: RenderWorkers,
}

/// A template as written: its place, text, file, and the variables its
/// `include:` bound (rendered into every context it is rendered in, so
/// neither the planner nor the runner needs to know about includes).
struct Written {
    at: Place,
    text: String,
    source: SourceFile,
    bound: Vars,
    /// It may loop ([`may_loop`]): rendered against the clock.
    may_loop: bool,
}

/// A template failed to render, at `at` in the file `source`.
#[derive(Debug, Clone)]
pub struct RenderError {
    pub message: String,
    pub at: Place,
    pub source: SourceFile,
}

impl RenderError {
    pub fn into_input_error(self, message: impl FnOnce(&str) -> String) -> InputError {
        self.source.error_at(
            self.at.line.max(1),
            self.at.column.max(1),
            message(&self.message),
        )
    }
}

impl Templates {
    pub fn new(secrets: Arc<SecretStore>) -> Templates {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&'static str>::new());
        guard_builtin_filters(&mut tera, Arc::clone(&secrets));
        let store = Arc::clone(&secrets);
        tera.register_filter("sh_quote", move |v: Value, _: Kwargs, _: &State| {
            note_filtered(&store, SecretFilter::ShQuote, &v);
            quote_each(&v, sh_quote, " ")
        });
        let store = Arc::clone(&secrets);
        tera.register_filter("ps_quote", move |v: Value, _: Kwargs, _: &State| {
            note_filtered(&store, SecretFilter::PsQuote, &v);
            quote_each(&v, ps_quote, ",")
        });
        let store = Arc::clone(&secrets);
        tera.register_filter("regex_escape", move |v: Value, _: Kwargs, _: &State| {
            note_filtered(&store, SecretFilter::RegexEscape, &v);
            scalar_text(&v).map(|s| regex_escape(&s))
        });
        tera.register_filter("glob_regex", |v: Value, _: Kwargs, _: &State| {
            scalar_text(&v).map(|s| glob_regex(&s))
        });
        // "" where mdatp cannot express the mask: the playbook says so.
        tera.register_filter("mdatp_folder", |v: Value, _: Kwargs, _: &State| {
            scalar_text(&v).map(|s| mdatp_folder(&s).unwrap_or_default())
        });
        let store = Arc::clone(&secrets);
        tera.register_filter("json", move |v: Value, _: Kwargs, _: &State| {
            note_filtered(&store, SecretFilter::Json, &v);
            serde_json::to_string(&v).map_err(|e| tera::Error::message(e.to_string()))
        });
        let store = Arc::clone(&secrets);
        tera.register_function("secret", move |kwargs: Kwargs, _: &State| {
            let name: &str = kwargs.must_get("name")?;
            store
                .get(name)
                .map(|s| s.expose().to_string())
                .map_err(tera::Error::message)
        });
        Templates {
            tera: Arc::new(tera),
            written: HashMap::new(),
            runaway: Default::default(),
            secrets,
            workers: RenderWorkers::default(),
        }
    }

    /// Compiles `template`, written in `source` where `bound` variables
    /// are bound, under `key`. A syntax error points into `source`.
    pub fn add(
        &mut self,
        key: &str,
        template: &Template,
        source: &SourceFile,
        bound: &Vars,
    ) -> Result<(), InputError> {
        if let Some((offset, filter)) = misused_filter(&template.text) {
            let place = offset_in_file(source, template.at, &template.text, offset);
            return Err(source
                .error_at(place.line, place.column, refusal(&filter))
                .with_help("quote the secret with sh_quote or ps_quote, or pass it as it is"));
        }
        self.compile(key, &template.text, template, 0, source, bound)
    }

    /// Compiles a condition (`when`, `until`): a bare expression. A
    /// condition renders only `true` or `false`, so what it does with a
    /// secret never shows: it may use any filter.
    pub fn add_condition(
        &mut self,
        key: &str,
        template: &Template,
        source: &SourceFile,
        bound: &Vars,
    ) -> Result<(), InputError> {
        let text = format!(
            "{CONDITION_PREFIX}{} %}}true{{% else %}}false{{% endif %}}",
            template.text.trim()
        );
        self.compile(key, &text, template, CONDITION_PREFIX.len(), source, bound)
    }

    fn compile(
        &mut self,
        key: &str,
        text: &str,
        written: &Template,
        shift: usize,
        source: &SourceFile,
        bound: &Vars,
    ) -> Result<(), InputError> {
        let at = written.at;
        self.written.insert(
            key.to_string(),
            Written {
                at,
                text: written.text.clone(),
                source: source.clone(),
                bound: bound.clone(),
                may_loop: may_loop(&written.text),
            },
        );
        // Cloned only if a runaway render still holds the engine.
        let tera = Arc::make_mut(&mut self.tera);
        tera.add_raw_template(key, text).map_err(|e| {
            let (message, mut place) = describe(&e, at, source);
            if place.line == at.line {
                place.column = place.column.saturating_sub(shift).max(at.column);
            }
            source
                .error_at(
                    place.line,
                    place.column,
                    format!("template syntax: {message}"),
                )
                .with_help(
                    "templates are Tera 2: {{ variable }}, {{ value | ps_quote }}, {% if ... %}",
                )
        })
    }

    /// The top-level variables `key` reads (loop variables and those its
    /// `include:` binds excluded).
    pub fn variables(&self, key: &str) -> Vec<String> {
        let bound = self.written.get(key).map(|w| &w.bound);
        let mut vars: Vec<String> = self
            .tera
            .get_template_variables(key)
            .map(|set| {
                set.into_iter()
                    .filter(|name| bound.is_none_or(|b| !b.contains_key(*name)))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        vars.sort();
        vars
    }

    /// The file template `key` is written in.
    pub fn source_of(&self, key: &str) -> Option<&SourceFile> {
        self.written.get(key).map(|w| &w.source)
    }

    pub fn render(&self, key: &str, context: &Context) -> Result<String, RenderError> {
        let Some(written) = self.written.get(key) else {
            return Err(RenderError {
                message: format!("no template `{key}`"),
                at: Place::default(),
                source: SourceFile::from_text("", ""),
            });
        };
        let failed = |message: String| RenderError {
            message,
            at: written.at,
            source: written.source.clone(),
        };
        let runaway = || self.runaway.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(message) = runaway().get(key) {
            return Err(failed(message.clone()));
        }
        let bind = |context: &mut Context| {
            for (name, value) in &written.bound {
                context.insert(name.clone(), value);
            }
        };
        let (rendered, out) = if written.may_loop {
            let (tera, key_owned, guarded) =
                (Arc::clone(&self.tera), key.to_string(), guarded_now());
            let mut context = context.clone();
            bind(&mut context);
            let work = move || {
                with_guard(guarded, || {
                    let mut out = Bounded::new();
                    let rendered = tera.render_to(&key_owned, &context, &mut out);
                    (rendered, out)
                })
            };
            match self.workers.within(MAX_RENDER_TIME, work) {
                Ok(done) => done,
                Err(Unfinished::TimedOut) => {
                    let message = too_long();
                    runaway().insert(key.to_string(), message.clone());
                    return Err(failed(message));
                }
                Err(Unfinished::Failed(message)) => return Err(failed(message)),
            }
        } else {
            let mut out = Bounded::new();
            let rendered = if written.bound.is_empty() {
                self.tera.render_to(key, context, &mut out)
            } else {
                let mut context = context.clone();
                bind(&mut context);
                self.tera.render_to(key, &context, &mut out)
            };
            (rendered, out)
        };
        if let Some(message) = out.exceeded {
            // Tera's own message would be a bare I/O error.
            runaway().insert(key.to_string(), message.clone());
            return Err(failed(message));
        }
        rendered.map_err(|e| {
            let (message, at) = describe(&e, written.at, &written.source);
            RenderError {
                message: self.secrets.redactor().redact(&message),
                at,
                source: written.source.clone(),
            }
        })?;
        String::from_utf8(out.text)
            .map_err(|_| failed("the template rendered text that is not UTF-8".into()))
    }

    /// Where in its file the first use of variable `name` in `key` is.
    pub fn place_of(&self, key: &str, name: &str) -> Option<Place> {
        let Written {
            at, text, source, ..
        } = self.written.get(key)?;
        let mut from = 0;
        while let Some(found) = text[from..].find(name) {
            let start = from + found;
            let end = start + name.len();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !word(text[..start].chars().next_back()) && !word(text[end..].chars().next()) {
                return Some(offset_in_file(source, *at, text, start));
            }
            from = end;
        }
        None
    }

    pub fn condition(&self, key: &str, context: &Context) -> Result<bool, RenderError> {
        unguarded(|| self.render(key, context)).map(|s| s == "true")
    }
}

/// The most text one template may render: far more than any command or
/// script line needs, little enough that a loop that never ends fails in
/// a moment instead of eating the controller's memory.
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;
/// The longest one template may take to render: far more than any real
/// one takes (microseconds), with room for a controller busy with a run.
pub const MAX_RENDER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a template past [`MAX_RENDER_TIME`] failed.
fn too_long() -> String {
    format!(
        "rendering took longer than {}s: a loop in it runs too long (or never ends)",
        MAX_RENDER_TIME.as_secs()
    )
}

/// Where a template renders to: refuses to grow past
/// [`MAX_RENDERED_BYTES`] or to go on writing past [`MAX_RENDER_TIME`].
/// Tera 2 bounds `range()` (100 000 items) but not loops nested in loops,
/// so the bound is on what they produce.
struct Bounded {
    text: Vec<u8>,
    started: std::time::Instant,
    /// Why rendering was stopped, when it was.
    exceeded: Option<String>,
}

impl Bounded {
    fn new() -> Bounded {
        Bounded {
            text: Vec::new(),
            started: std::time::Instant::now(),
            exceeded: None,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED_BYTES {
            self.exceeded = Some(format!(
                "the template renders more than {} MiB; a loop in it runs too long (or never ends)",
                MAX_RENDERED_BYTES / (1024 * 1024)
            ));
        } else if self.started.elapsed() > MAX_RENDER_TIME {
            self.exceeded = Some(too_long());
        }
        if self.exceeded.is_some() {
            return Err(std::io::Error::other("template output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tags that cannot make a template run long: Tera 2 has no loop but
/// `for`, and an expression only goes through what it is given.
const STRAIGHT_TAGS: &[&str] = &[
    "if",
    "elif",
    "else",
    "endif",
    "set",
    "set_global",
    "raw",
    "endraw",
];

/// Whether `text` may run long: a tag other than [`STRAIGHT_TAGS`] (`for`,
/// and whatever else, such as `include` or a component, that could run
/// one), or a component call (`{{<name ... />}}`).
fn may_loop(text: &str) -> bool {
    let after_open = |open: &'static str| {
        text.match_indices(open).map(move |(at, _)| {
            text[at + open.len()..]
                .trim_start_matches(['-', '+'])
                .trim_start()
        })
    };
    after_open("{{").any(|rest| rest.starts_with('<'))
        || after_open("{%").any(|rest| {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            !STRAIGHT_TAGS.contains(&word.as_str())
        })
}

/// Quotes a string, or each item of a list joined by `separator`.
fn quote_each(
    value: &Value,
    quote: fn(&str) -> String,
    separator: &str,
) -> tera::TeraResult<String> {
    if value.is_array() {
        let items = value
            .as_array()
            .ok_or_else(|| tera::Error::message("expected a list"))?;
        let quoted: Result<Vec<String>, _> = items
            .iter()
            .map(|item| scalar_text(item).map(|s| quote(&s)))
            .collect();
        return Ok(quoted?.join(separator));
    }
    scalar_text(value).map(|s| quote(&s))
}

fn scalar_text(value: &Value) -> tera::TeraResult<String> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_string());
    }
    if value.is_number() || value.is_bool() {
        return Ok(value.to_string());
    }
    if value.is_undefined() || value.is_none() {
        return Err(tera::Error::message(
            "cannot quote an undefined or null value; give the variable a value or guard it with `is defined`",
        ));
    }
    Err(tera::Error::message(format!(
        "cannot quote a {}; quote its items (a list is quoted item by item)",
        value.name()
    )))
}

/// A Tera error's message, and its place translated into the playbook.
fn describe(error: &tera::Error, at: Place, source: &SourceFile) -> (String, Place) {
    match error.kind() {
        tera::ErrorKind::SyntaxError(report) | tera::ErrorKind::RenderingError(report) => {
            let span = report.span();
            let place = place_in_file(source, at, span.start_line, span.start_col);
            (report.message().to_string(), place)
        }
        _ => {
            // Messages of filter or function errors come wrapped; keep the innermost.
            let mut message = error.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
            while let Some(c) = cause {
                message = c.to_string();
                cause = c.source();
            }
            (message, at)
        }
    }
}

/// Where byte `offset` of template `text`, written at `at`, is in the file.
fn offset_in_file(source: &SourceFile, at: Place, text: &str, offset: usize) -> Place {
    let before = &text[..offset];
    let tline = before.matches('\n').count() + 1;
    let tcol = before.rsplit('\n').next().unwrap_or("").chars().count();
    place_in_file(source, at, tline, tcol)
}

/// Where line `tline` (1-based), column `tcol` (0-based) of a template
/// written at `at` is in the file. Block scalars (`|`, `>`) start on the line
/// after their indicator; quoted ones one column after the quote.
pub(crate) fn place_in_file(source: &SourceFile, at: Place, tline: usize, tcol: usize) -> Place {
    let lines: Vec<&str> = source.text.lines().collect();
    let Some(first) = lines.get(at.line.saturating_sub(1)) else {
        return at;
    };
    let rest: String = first.chars().skip(at.column.saturating_sub(1)).collect();
    let tline = tline.max(1);
    if rest.starts_with('|') || rest.starts_with('>') {
        let line = at.line + tline;
        let indent = lines
            .get(line - 1)
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0);
        return Place {
            line,
            column: indent + tcol + 1,
        };
    }
    let quoted = usize::from(rest.starts_with('"') || rest.starts_with('\''));
    if tline == 1 {
        Place {
            line: at.line,
            column: at.column + quoted + tcol,
        }
    } else {
        // A later line of a multi-line scalar: its indentation is YAML's.
        let line = at.line + tline - 1;
        let indent = lines
            .get(line - 1)
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0);
        Place {
            line,
            column: indent + tcol + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::secrets::{MissingSecrets, SecretStore};

    /// A loop that would render gigabytes stops at the bound, with a
    /// message, and the same template then fails at once for other hosts.
    #[test]
    fn rendering_stops_at_the_size_bound() {
        let source = SourceFile::from_text("p.yml", "x");
        let mut templates = Templates::new(SecretStore::new(None, MissingSecrets::Fail));
        let template = Template {
            text: "{% for i in range(end=100000) %}{% for j in range(end=100000) %}{{ big }}{% endfor %}{% endfor %}".into(),
            at: Place { line: 1, column: 1 },
        };
        templates
            .add("t", &template, &source, &Vars::new())
            .unwrap();
        let mut context = Context::new();
        context.insert("big", &"x".repeat(4096));
        let started = std::time::Instant::now();
        let error = templates.render("t", &context).unwrap_err();
        assert!(
            error.message.contains("renders more than 4 MiB"),
            "{}",
            error.message
        );
        let again = templates.render("t", &context).unwrap_err();
        assert_eq!(again.message, error.message);
        assert!(started.elapsed() < MAX_RENDER_TIME);
    }

    #[test]
    fn only_templates_that_can_loop_are_rendered_against_the_clock() {
        for straight in [
            "echo {{ host.name }}",
            "{% if a %}x{%- elif b -%}y{% else %}z{% endif %}",
            "{% set x = 1 %}{{ x }} {%raw%}{{ y }}{%endraw%}",
            "a {{ b < c }}",
        ] {
            assert!(!may_loop(straight), "{straight}");
        }
        for looping in [
            "{% for i in x %}{% endfor %}",
            "{%- for i in x -%}{% endfor %}",
            "{% include 'other' %}",
            "{{ <hello val=1/> }}",
            "{{<hello/>}}",
            "{% component c() %}{% endcomponent c %}",
        ] {
            assert!(may_loop(looping), "{looping}");
        }
    }

    /// Exclusions exported as INI are applied in the order the export
    /// lists them: maps keep their order through captures and templates.
    #[test]
    fn maps_iterate_in_the_order_they_were_written() {
        let source = SourceFile::from_text("p.yml", "x");
        let mut templates = Templates::new(SecretStore::new(None, MissingSecrets::Fail));
        let template = Template {
            text: "{% for name, item in settings %}{{ name }};{% endfor %}".into(),
            at: Place { line: 1, column: 1 },
        };
        templates
            .add("t", &template, &source, &Vars::new())
            .unwrap();
        let settings = crate::run::capture::parse(
            crate::load::CaptureFormat::Ini,
            "[item_0002]\nPath=/c\n[item_0000]\nPath=/a\n[item_0001]\nPath=/b\n",
        )
        .unwrap();
        let mut context = Context::new();
        context.insert("settings", &settings);
        assert_eq!(
            templates.render("t", &context).unwrap(),
            "item_0002;item_0000;item_0001;"
        );
    }
}
