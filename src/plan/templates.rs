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

use std::collections::HashMap;
use std::sync::Arc;

use tera::{Context, Kwargs, State, Tera, Value};

use super::secrets::SecretStore;
use crate::load::{InputError, Place, SourceFile, Template};
use crate::quote::{ps_quote, regex_escape, sh_quote};

/// How a condition is wrapped into a template that renders `true` or `false`.
const CONDITION_PREFIX: &str = "{% if ";

pub struct Templates {
    tera: Tera,
    /// Where each template was written, and its text as written.
    places: HashMap<String, (Place, String)>,
}

/// A template failed to render; `line`/`column` are in the playbook.
#[derive(Debug, Clone)]
pub struct RenderError {
    pub message: String,
    pub at: Place,
}

impl Templates {
    pub fn new(secrets: Arc<SecretStore>) -> Templates {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&'static str>::new());
        tera.register_filter("sh_quote", |v: Value, _: Kwargs, _: &State| {
            quote_each(&v, sh_quote, " ")
        });
        tera.register_filter("ps_quote", |v: Value, _: Kwargs, _: &State| {
            quote_each(&v, ps_quote, ",")
        });
        tera.register_filter("regex_escape", |v: Value, _: Kwargs, _: &State| {
            scalar_text(&v).map(|s| regex_escape(&s))
        });
        tera.register_filter("json", |v: Value, _: Kwargs, _: &State| {
            serde_json::to_string(&v).map_err(|e| tera::Error::message(e.to_string()))
        });
        tera.register_function("secret", move |kwargs: Kwargs, _: &State| {
            let name: &str = kwargs.must_get("name")?;
            secrets
                .get(name)
                .map(|s| s.expose().to_string())
                .map_err(tera::Error::message)
        });
        Templates {
            tera,
            places: HashMap::new(),
        }
    }

    /// Compiles `template` under `key`. A syntax error points into `source`.
    pub fn add(
        &mut self,
        key: &str,
        template: &Template,
        source: &SourceFile,
    ) -> Result<(), InputError> {
        self.compile(key, &template.text, template, 0, source)
    }

    /// Compiles a condition (`when`, `until`): a bare expression.
    pub fn add_condition(
        &mut self,
        key: &str,
        template: &Template,
        source: &SourceFile,
    ) -> Result<(), InputError> {
        let text = format!(
            "{CONDITION_PREFIX}{} %}}true{{% else %}}false{{% endif %}}",
            template.text.trim()
        );
        self.compile(key, &text, template, CONDITION_PREFIX.len(), source)
    }

    fn compile(
        &mut self,
        key: &str,
        text: &str,
        written: &Template,
        shift: usize,
        source: &SourceFile,
    ) -> Result<(), InputError> {
        let at = written.at;
        self.places
            .insert(key.to_string(), (at, written.text.clone()));
        self.tera.add_raw_template(key, text).map_err(|e| {
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

    /// The top-level variables `key` reads (loop variables excluded).
    pub fn variables(&self, key: &str) -> Vec<String> {
        let mut vars: Vec<String> = self
            .tera
            .get_template_variables(key)
            .map(|set| set.into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        vars.sort();
        vars
    }

    pub fn render(
        &self,
        key: &str,
        context: &Context,
        source: &SourceFile,
    ) -> Result<String, RenderError> {
        self.tera.render(key, context).map_err(|e| {
            let at = self.places.get(key).map(|(at, _)| *at).unwrap_or_default();
            let (message, at) = describe(&e, at, source);
            RenderError { message, at }
        })
    }

    /// Where in the file the first use of variable `name` in `key` is.
    pub fn place_of(&self, key: &str, name: &str, source: &SourceFile) -> Option<Place> {
        let (at, text) = self.places.get(key)?;
        let mut from = 0;
        while let Some(found) = text[from..].find(name) {
            let start = from + found;
            let end = start + name.len();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !word(text[..start].chars().next_back()) && !word(text[end..].chars().next()) {
                let before = &text[..start];
                let tline = before.matches('\n').count() + 1;
                let tcol = before.rsplit('\n').next().unwrap_or("").chars().count();
                return Some(place_in_file(source, *at, tline, tcol));
            }
            from = end;
        }
        None
    }

    pub fn condition(
        &self,
        key: &str,
        context: &Context,
        source: &SourceFile,
    ) -> Result<bool, RenderError> {
        self.render(key, context, source).map(|s| s == "true")
    }
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
        templates.add("t", &template, &source).unwrap();
        let settings = crate::run::capture::parse(
            crate::load::CaptureFormat::Ini,
            "[item_0002]\nPath=/c\n[item_0000]\nPath=/a\n[item_0001]\nPath=/b\n",
        )
        .unwrap();
        let mut context = Context::new();
        context.insert("settings", &settings);
        assert_eq!(
            templates.render("t", &context, &source).unwrap(),
            "item_0002;item_0000;item_0001;"
        );
    }
}
