//! `switchyard validate`: loads manifests and reports every problem as `file:line`.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use switchyard_crds::{
    Kind,
    manifest::{self, Manifest},
    validate::Severity,
};

#[cfg(test)]
mod tests;

/// The name reports use for standard input.
pub const STDIN_NAME: &str = "<stdin>";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Files or directories to read (`-` reads stdin). Directories are read recursively for
    /// *.yaml, *.yml and *.json files. Repeat the flag or list several paths after it.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
}

/// What a run read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub objects: BTreeMap<Kind, usize>,
    /// Non-SMI Kubernetes objects passed over.
    pub skipped: usize,
    pub errors: usize,
    pub warnings: usize,
}

impl Report {
    /// Warnings are reported but do not make the input invalid.
    pub fn is_valid(&self) -> bool {
        self.errors == 0
    }
}

/// Reads every path, writes one line per finding (`file:line: …`, in file and line order) and a
/// summary to `out`. Only a failure to write is an `Err`; everything about the input is counted
/// in the report.
pub fn run(args: &Args, stdin: &mut dyn Read, out: &mut dyn Write) -> io::Result<Report> {
    let mut report = Report::default();
    for path in &args.paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match stdin.read_to_end(&mut bytes) {
                Ok(_) => report.manifest(&manifest::load_bytes(STDIN_NAME, &bytes), out)?,
                Err(e) => report.unreadable(Path::new(STDIN_NAME), &e, out)?,
            }
            continue;
        }
        let files = match manifest::find_files(path) {
            Ok(files) => files,
            Err(e) => {
                report.unreadable(path, &e, out)?;
                continue;
            }
        };
        if files.is_empty() {
            writeln!(
                out,
                "{}: note: no *.yaml, *.yml or *.json files here",
                path.display()
            )?;
        }
        for file in files {
            match fs::read(&file) {
                Ok(bytes) => {
                    let m = manifest::load_bytes(&file.display().to_string(), &bytes);
                    report.manifest(&m, out)?;
                }
                Err(e) => report.unreadable(&file, &e, out)?,
            }
        }
    }
    writeln!(out, "{report}")?;
    out.flush()?;
    Ok(report)
}

// === impl Report ===

impl Report {
    fn unreadable(&mut self, path: &Path, e: &io::Error, out: &mut dyn Write) -> io::Result<()> {
        self.errors += 1;
        writeln!(out, "{}: error: {}", path.display(), describe_io(e))
    }

    fn manifest(&mut self, m: &Manifest, out: &mut dyn Write) -> io::Result<()> {
        self.files += 1;
        // (line, text); sorted by line, stable, so a file reads top to bottom.
        let mut lines: Vec<(usize, String)> = Vec::new();
        for e in m.located_errors() {
            self.errors += 1;
            lines.push((e.line, e.to_string()));
        }
        for p in m.problems() {
            let text = match p.item.severity {
                Severity::Error => {
                    self.errors += 1;
                    format!(
                        "{}:{}: {}: {}: {}",
                        p.source, p.line, p.item.object, p.item.field, p.item.reason
                    )
                }
                Severity::Warning => {
                    self.warnings += 1;
                    format!(
                        "{}:{}: warning: {}: {}: {}",
                        p.source, p.line, p.item.object, p.item.field, p.item.reason
                    )
                }
            };
            lines.push((p.line, text));
        }
        for o in &m.others {
            self.skipped += 1;
            lines.push((
                o.line,
                format!(
                    "{}:{}: note: {o} is not an SMI object; skipped",
                    m.source, o.line
                ),
            ));
        }
        for o in &m.objects {
            *self.objects.entry(o.object.kind()).or_default() += 1;
        }
        lines.sort_by_key(|(line, _)| *line);
        for (_, text) in lines {
            writeln!(out, "{text}")?;
        }
        Ok(())
    }
}

/// `read 18 SMI objects (TrafficSplit: 4, …) from 9 files, skipped 1 non-SMI object; 0 errors`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.objects.values().sum();
        write!(f, "read {}", plural(total, "SMI object"))?;
        if total > 0 {
            let kinds: Vec<String> = self
                .objects
                .iter()
                .map(|(k, n)| format!("{}: {n}", k.as_str()))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        write!(f, " from {}", plural(self.files, "file"))?;
        if self.skipped > 0 {
            write!(f, ", skipped {}", plural(self.skipped, "non-SMI object"))?;
        }
        write!(f, "; {}", plural(self.errors, "error"))?;
        if self.warnings > 0 {
            write!(f, ", {}", plural(self.warnings, "warning"))?;
        }
        Ok(())
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// io::Error's own text is capitalised by the OS and carries an errno; reports are lowercase.
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}
