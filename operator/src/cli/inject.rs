//! `switchyard inject -f FILE`: the injector's patch applied to manifests offline, like
//! `linkerd inject --manual`, for clusters without the webhook or to review what it would do.
//!
//! Every document is read (multi-document YAML or JSON, `kind: List` too); each Pod template
//! (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob)
//! is injected as in a namespace annotated `switchyard.dev/inject: enabled`, so a template
//! annotated `disabled` is left alone; what was done is reported on stderr. A document with
//! nothing injected is printed exactly as read, comments included; an injected one is printed
//! again from its parsed form. Any error prints nothing on stdout and exits 1, so a pipe into
//! `kubectl apply` applies all or nothing.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    path::PathBuf,
};

use serde_json::Value;
use switchyard_crds::manifest;

use super::{controller::InjectArgs, local::DataPlaneArg, validate::STDIN_NAME};
use crate::{
    annotations::{self, InjectMode},
    controller::auth::DEFAULT_AUDIENCE,
    inject::{
        InjectError,
        workload::{self, Outcome},
    },
    install::DEFAULT_NAMESPACE,
};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct InjectCliArgs {
    /// Manifest files to inject (`-` reads stdin), printed in order.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Data plane of templates that do not choose one with `switchyard.dev/data-plane`.
    #[arg(long, value_enum, default_value = "envoy")]
    pub data_plane: DataPlaneArg,
    /// The operator's namespace: where the proxies find the control plane, and never injected.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub operator_namespace: String,
    #[command(flatten)]
    pub inject: InjectArgs,
}

/// What a run did, for the exit status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub injected: usize,
    pub skipped: usize,
    pub errors: usize,
}

/// Reads every path, writes the injected manifests to `out` (only when there is no error) and a
/// line per template and per error (`file:line: …`) to `err`. Only a failure to write is an `Err`.
pub fn run(
    args: &InjectCliArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Report> {
    let config = match args.inject.config(
        &args.operator_namespace,
        args.data_plane.into(),
        DEFAULT_AUDIENCE,
    ) {
        Ok(config) => config,
        Err(e) => {
            writeln!(err, "{e:#}")?;
            return Ok(Report {
                errors: 1,
                ..Report::default()
            });
        }
    };
    if config.xds_ca.is_none() {
        writeln!(
            err,
            "warning: no --xds-ca-file: injected Pods cannot verify the control plane and their \
             switchyard-init will fail"
        )?;
    }
    // Offline there is no Namespace to read: asking for injection is the enrolment.
    let enrolled = BTreeMap::from([(
        annotations::INJECT.to_owned(),
        InjectMode::Enabled.to_string(),
    )]);
    let mut report = Report::default();
    let mut printed = String::new();
    for path in &args.paths {
        let (source, bytes) = if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            (
                STDIN_NAME.to_owned(),
                stdin.read_to_end(&mut bytes).map(|_| bytes),
            )
        } else {
            (path.display().to_string(), fs::read(path))
        };
        let text = match bytes.map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                report.errors += 1;
                writeln!(err, "{source}: error: not UTF-8; manifests must be UTF-8")?;
                continue;
            }
            Err(e) => {
                report.errors += 1;
                writeln!(
                    err,
                    "{source}: error: {}",
                    e.kind().to_string().to_lowercase()
                )?;
                continue;
            }
        };
        for doc in documents(&text) {
            let mut file = File {
                source: &source,
                doc: &doc,
                report: &mut report,
                err: &mut *err,
            };
            if let Some(yaml) =
                file.inject(|object| workload::inject(object, &enrolled, &config))?
            {
                if !printed.is_empty() {
                    printed.push_str("---\n");
                }
                printed.push_str(&yaml);
            }
        }
    }
    if report.errors == 0 {
        out.write_all(printed.as_bytes())?;
    }
    writeln!(
        err,
        "injected {} of {} pod templates{}",
        report.injected,
        report.injected + report.skipped,
        match report.errors {
            0 => String::new(),
            1 => "; 1 error, nothing printed".to_owned(),
            n => format!("; {n} errors, nothing printed"),
        }
    )?;
    out.flush()?;
    Ok(report)
}

/// One YAML document of a file: its text and the line it starts on (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Document {
    line: usize,
    text: String,
}

/// Splits a stream at `---` lines, as kubectl does. A document that holds only blanks and
/// comments is dropped. What follows `--- ` on a marker line starts the next document, with the
/// marker blanked so that columns stay where they were.
fn documents(text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = Document {
        line: 1,
        text: String::new(),
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let next = if line.trim_end() == "---" {
            Document {
                line: i + 2,
                text: String::new(),
            }
        } else if let Some(rest) = line.strip_prefix("--- ") {
            Document {
                line: i + 1,
                text: format!("    {rest}"),
            }
        } else {
            current.text.push_str(line);
            continue;
        };
        docs.push(std::mem::replace(&mut current, next));
    }
    docs.push(current);
    docs.retain(|d| {
        d.text.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "..."
        })
    });
    docs
}

/// One document being injected, and where its findings go.
struct File<'a> {
    source: &'a str,
    doc: &'a Document,
    report: &'a mut Report,
    err: &'a mut dyn Write,
}

impl File<'_> {
    /// The document as it should be printed, `None` on an error (reported).
    fn inject(
        &mut self,
        mut inject: impl FnMut(&mut Value) -> Result<Outcome, InjectError>,
    ) -> io::Result<Option<String>> {
        let mut value: Value = match serde_yaml::from_str(&self.doc.text) {
            Ok(v) => v,
            Err(e) => {
                let line = self.doc.line + e.location().map_or(0, |l| l.line().saturating_sub(1));
                return self.error(line, &e.to_string().to_lowercase());
            }
        };
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && value.get("items").is_some_and(Value::is_array);
        let mut changed = false;
        let objects: Vec<&mut Value> = if is_list {
            value["items"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .collect()
        } else {
            vec![&mut value]
        };
        let mut failed = false;
        for object in objects {
            if object.get("apiVersion").and_then(Value::as_str).is_none()
                || object.get("kind").and_then(Value::as_str).is_none()
            {
                let line = self.line_of(object, "");
                self.error(
                    line,
                    "expected a Kubernetes object (a mapping with apiVersion and kind)",
                )?;
                failed = true;
                continue;
            }
            let before = object.clone();
            let done = match inject(object) {
                Ok(Outcome::NotAWorkload) => continue,
                Ok(Outcome::Injected(data_plane)) => {
                    changed = true;
                    self.report.injected += 1;
                    format!("injected ({data_plane})")
                }
                Ok(Outcome::Skipped(reason)) => {
                    self.report.skipped += 1;
                    format!("not injected: {reason}")
                }
                Err(e) => {
                    let line = self.line_of(&before, &e.field);
                    self.error(line, &e.to_string())?;
                    failed = true;
                    continue;
                }
            };
            let line = self.line_of(&before, "");
            writeln!(
                self.err,
                "{}:{line}: {}: {done}",
                self.source,
                describe(&before)
            )?;
        }
        if failed {
            return Ok(None);
        }
        if !changed {
            return Ok(Some(self.doc.text.clone()));
        }
        match serde_yaml::to_string(&value) {
            Ok(yaml) => Ok(Some(yaml.strip_prefix("---\n").unwrap_or(&yaml).to_owned())),
            Err(e) => self.error(self.doc.line, &e.to_string()),
        }
    }

    fn error(&mut self, line: usize, message: &str) -> io::Result<Option<String>> {
        self.report.errors += 1;
        writeln!(self.err, "{}:{line}: {message}", self.source)?;
        Ok(None)
    }

    /// The line of `field` (a path such as `spec.template.metadata.annotations["x"]`) in
    /// `object`, found through the manifest loader's line-marked tree; the object's first line
    /// when the field is empty, and the document's when the object cannot be found.
    fn line_of(&self, object: &Value, field: &str) -> usize {
        let loaded = manifest::load_str(self.source, &self.doc.text);
        let Some(found) = loaded.others.iter().find(|o| &o.value == object) else {
            return self.doc.line;
        };
        let within = if field.is_empty() {
            found.line
        } else {
            found.line_of(&field_path(field))
        };
        self.doc.line + within.saturating_sub(1)
    }
}

/// `metadata.annotations["a/b"]` as the manifest loader's paths write a map key: `metadata.annotations.a/b`.
fn field_path(field: &str) -> String {
    field.replace("[\"", ".").replace("\"]", "")
}

/// `deployment demo/web`, `pod web`.
fn describe(object: &Value) -> String {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let kind = s("/kind").to_ascii_lowercase();
    match s("/metadata/namespace") {
        "" => format!("{kind} {}", s("/metadata/name")),
        ns => format!("{kind} {ns}/{}", s("/metadata/name")),
    }
}
