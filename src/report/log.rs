//! `--log FILE`: every event as one JSON line, for machines and for the
//! post-mortem of a long migration. Events hold no secrets (the runner
//! redacts before it emits), so the log can be shared.

use std::io::Write;

use crate::run::{Event, Observer};

pub struct JsonLines {
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonLines {
    pub fn create(path: &std::path::Path) -> std::io::Result<JsonLines> {
        // Only its owner reads it: it holds what the endpoints printed.
        let file = crate::owner_only::append(path)?;
        Ok(JsonLines {
            out: std::io::BufWriter::new(file),
        })
    }
}

impl Observer for JsonLines {
    fn on_event(&mut self, at: chrono::DateTime<chrono::Utc>, event: &Event) {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            event: &'a Event,
        }
        let line = Line {
            time: crate::run::timestamp(at),
            event,
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = writeln!(self.out, "{text}");
        }
        // Flushed per event: a killed run leaves a log up to its last event.
        let _ = self.out.flush();
    }
}
