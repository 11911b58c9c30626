//! --log / --log-format / --debug: runc-shaped log lines, text
//! (`time="..." level=info msg="..."`) or JSON (`{"level":..,"msg":..,"time":..}`),
//! to the --log file or stderr.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct RuncFormat(LogFormat);

#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S, N> FormatEvent<S, N> for RuncFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let level = level_name(event.metadata().level());
        match self.0 {
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("level".into(), level.into());
                object.insert("msg".into(), fields.message.into());
                object.insert("time".into(), time.into());
                for (k, v) in fields.extra {
                    object.insert(k, v.into());
                }
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
            LogFormat::Text => {
                let mut line = format!("time={time:?} level={level} msg={:?}", fields.message);
                for (k, v) in fields.extra {
                    let _ = write!(line, " {k}={v:?}");
                }
                writeln!(writer, "{line}")
            }
        }
    }
}

/// Installs the global subscriber. Without --log, only warnings and errors go to
/// stderr (a caller such as containerd parses the runtime's stdout).
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> anyhow::Result<()> {
    let level = if debug {
        Level::DEBUG
    } else if log.is_some() {
        Level::INFO
    } else {
        Level::WARN
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(RuncFormat(format));
    match log {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening log file {}: {e}", path.display()))?;
            builder.with_writer(Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
