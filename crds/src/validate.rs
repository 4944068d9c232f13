//! Validation of SMI objects: every problem at once, each naming the object, the field path
//! and the reason (`trafficsplit default/web: spec.backends[1].weight: must be ≥ 0`).

use std::{collections::HashMap, fmt};

use crate::{
    Kind, ObjectRef, SmiObject, VersionedObject,
    access::{Subject, TrafficTarget},
    specs::{self, HttpRouteGroup, PortMatch},
    split::TrafficSplit,
    weight,
};

#[cfg(test)]
mod tests;

/// How bad a problem is: errors make the object invalid (it is not served and its last good
/// state stays in force); warnings are served but reported in status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    pub object: ObjectRef,
    pub severity: Severity,
    /// Field path in the object's own version, e.g. `spec.backends[1].weight`, or `specs[0].kind`
    /// for a v1alpha1 TrafficTarget.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(f, "{}: {}: {sev}{}", self.object, self.field, self.reason)
    }
}

/// Validates an object as written, in its own version: version rules (whole-number weights from
/// v1alpha2 on) plus every canonical rule, with field paths in that version's shape.
pub fn validate(obj: &VersionedObject) -> Vec<Problem> {
    let version = obj.version();
    let kind = obj.kind();
    let canonical = obj.clone().into_canonical();
    let mut problems = validate_canonical(&canonical);
    let mut v = Validator {
        object: canonical.object_ref(),
        problems: Vec::new(),
    };
    match &canonical {
        SmiObject::TrafficSplit(ts) if version != "v1alpha1" => {
            for (i, b) in ts.backends.iter().enumerate() {
                if let Some(w) = b.weight
                    && !w.0.is_integer()
                {
                    v.error(
                        format!("spec.backends[{i}].weight"),
                        "must be a whole number (fractional weights need v1alpha1 quantities)",
                    );
                }
            }
        }
        SmiObject::TrafficTarget(tt) if version != "v1alpha3" => {
            for (i, r) in tt.rules.iter().enumerate() {
                if r.kind == "UDPRoute" {
                    v.error(
                        format!("spec.rules[{i}].kind"),
                        "UDPRoute rules need access.smi-spec.io/v1alpha3",
                    );
                }
            }
        }
        _ => {}
    }
    problems.extend(v.problems);
    for p in &mut problems {
        p.field = versioned_path(kind, version, &p.field);
    }
    problems
}

/// Rewrites a canonical `spec.`-shaped path into the shape of a legacy version that keeps its
/// fields at the top level (TrafficTarget v1alpha1, HTTPRouteGroup v1alpha1/v1alpha2).
fn versioned_path(kind: Kind, version: &str, path: &str) -> String {
    match (kind, version) {
        (Kind::TrafficTarget, "v1alpha1") => {
            if let Some(rest) = path.strip_prefix("spec.rules") {
                format!("specs{rest}")
            } else {
                path.strip_prefix("spec.").unwrap_or(path).to_string()
            }
        }
        (Kind::HttpRouteGroup, "v1alpha1" | "v1alpha2") => {
            path.strip_prefix("spec.").unwrap_or(path).to_string()
        }
        _ => path.to_string(),
    }
}

/// Validates a canonical object; field paths use the `spec.` shape of the latest version.
pub fn validate_canonical(obj: &SmiObject) -> Vec<Problem> {
    let mut v = Validator {
        object: obj.object_ref(),
        problems: Vec::new(),
    };
    v.metadata(obj.metadata());
    match obj {
        SmiObject::TrafficSplit(ts) => v.traffic_split(ts),
        SmiObject::TrafficTarget(tt) => v.traffic_target(tt),
        SmiObject::HttpRouteGroup(g) => v.http_route_group(g),
        SmiObject::TcpRoute(r) => v.ports(&r.ports),
        SmiObject::UdpRoute(r) => v.ports(&r.ports),
    }
    v.problems
}

/// Compiles a `pathRegex` or header regex the way the mesh applies it: RE2 syntax, anchored at
/// both ends (a full match, as Envoy's `safe_regex` does), with a bounded compiled size because
/// the pattern comes from untrusted manifests.
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// The Kubernetes limit for a DNS-1035 label (Service names) and DNS-1123 label (namespaces).
const MAX_LABEL: usize = 63;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// RFC 9110 `token`: what an HTTP header name may contain.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

struct Validator {
    object: ObjectRef,
    problems: Vec<Problem>,
}

// === impl Validator ===

impl Validator {
    fn push(&mut self, severity: Severity, field: String, reason: impl Into<String>) {
        self.problems.push(Problem {
            object: self.object.clone(),
            severity,
            field,
            reason: reason.into(),
        });
    }

    fn error(&mut self, field: String, reason: impl Into<String>) {
        self.push(Severity::Error, field, reason);
    }

    fn warning(&mut self, field: String, reason: impl Into<String>) {
        self.push(Severity::Warning, field, reason);
    }

    fn metadata(&mut self, meta: &kube::core::ObjectMeta) {
        match meta.name.as_deref() {
            None | Some("") => self.error("metadata.name".into(), "is required"),
            Some(n) if !is_dns_subdomain(n) => self.error(
                "metadata.name".into(),
                format!("{n:?} is not a valid name (lowercase letters, digits, '-' and '.')"),
            ),
            Some(_) => {}
        }
        if let Some(ns) = meta.namespace.as_deref()
            && !is_dns_label(ns)
        {
            self.error(
                "metadata.namespace".into(),
                format!("{ns:?} is not a valid namespace"),
            );
        }
    }

    /// Checks a same-namespace Service name given as `name` only.
    fn service_name(&mut self, field: String, name: &str) {
        if name.is_empty() {
            self.error(field, "is required");
        } else if name.contains('.') {
            self.error(
                field,
                format!("{name:?}: backends must be Services in the split's own namespace, named without a namespace"),
            );
        } else if !is_dns_label(name) {
            self.error(field, format!("{name:?} is not a valid Service name"));
        }
    }

    fn traffic_split(&mut self, ts: &TrafficSplit) {
        let ns = self.object.namespace.clone();
        let service = ts.service.as_str();
        if service.is_empty() {
            self.error("spec.service".into(), "is required");
        } else {
            match crate::split::root_service_name(service, &ns) {
                Ok(name) if is_dns_label(name) => {}
                Ok(name) => self.error(
                    "spec.service".into(),
                    format!("{name:?} is not a valid Service name"),
                ),
                Err(reason) => self.error("spec.service".into(), reason),
            }
        }

        if ts.backends.is_empty() {
            self.error("spec.backends".into(), "must list at least one backend");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut weights = Vec::new();
        for (i, b) in ts.backends.iter().enumerate() {
            self.service_name(format!("spec.backends[{i}].service"), &b.service);
            if let Some(first) = seen.insert(b.service.as_str(), i) {
                self.error(
                    format!("spec.backends[{i}].service"),
                    format!(
                        "duplicate backend {:?} (also spec.backends[{first}])",
                        b.service
                    ),
                );
            }
            match b.weight {
                None => self.error(format!("spec.backends[{i}].weight"), "is required"),
                Some(w) if w.0.is_negative() => self.error(
                    format!("spec.backends[{i}].weight"),
                    format!("must be ≥ 0 (got {})", w.0),
                ),
                Some(w) => weights.push(w.0),
            }
        }
        if weights.len() == ts.backends.len() && !weights.is_empty() {
            if weights.iter().all(|w| w.is_zero()) {
                self.warning(
                    "spec.backends".into(),
                    "all weights are zero: the split is inactive and traffic goes to the root service",
                );
            } else if weight::integer_weights(&weights).is_none() {
                self.error(
                    "spec.backends".into(),
                    "weights are too large or too precise to apply exactly",
                );
            }
        }

        let mut seen_matches: HashMap<&str, usize> = HashMap::new();
        for (i, m) in ts.matches.iter().enumerate() {
            if m.kind != Kind::HttpRouteGroup.as_str() {
                self.error(
                    format!("spec.matches[{i}].kind"),
                    format!("unknown kind {:?}: only HTTPRouteGroup", m.kind),
                );
            }
            if let Some(g) = m.api_group.as_deref()
                && g != Kind::HttpRouteGroup.group()
            {
                self.error(
                    format!("spec.matches[{i}].apiGroup"),
                    format!("unknown API group {g:?}: only specs.smi-spec.io"),
                );
            }
            if m.name.is_empty() {
                self.error(format!("spec.matches[{i}].name"), "is required");
            } else if let Some(first) = seen_matches.insert(m.name.as_str(), i) {
                self.warning(
                    format!("spec.matches[{i}].name"),
                    format!("duplicate match {:?} (also spec.matches[{first}])", m.name),
                );
            }
        }
    }

    fn subject(&mut self, field: &str, s: &Subject) {
        if s.kind != "ServiceAccount" {
            self.error(
                format!("{field}.kind"),
                format!(
                    "unsupported subject kind {:?}: only ServiceAccount grants access",
                    s.kind
                ),
            );
        }
        if s.name.is_empty() {
            self.error(format!("{field}.name"), "is required");
        } else if !is_dns_subdomain(&s.name) {
            self.error(
                format!("{field}.name"),
                format!("{:?} is not a valid ServiceAccount name", s.name),
            );
        }
        if let Some(ns) = s.namespace.as_deref()
            && !is_dns_label(ns)
        {
            self.error(
                format!("{field}.namespace"),
                format!("{ns:?} is not a valid namespace"),
            );
        }
    }

    fn traffic_target(&mut self, tt: &TrafficTarget) {
        let d = &tt.destination;
        self.subject("spec.destination", &d.subject);
        if let Some(ns) = d.subject.namespace.as_deref()
            && ns != self.object.namespace
        {
            self.error(
                "spec.destination.namespace".into(),
                format!(
                    "cross-namespace destination {ns:?}: a TrafficTarget must live in its destination's namespace ({:?})",
                    self.object.namespace
                ),
            );
        }
        if d.port == Some(0) {
            self.error("spec.destination.port".into(), "must be 1–65535");
        }

        if tt.rules.is_empty() {
            self.warning(
                "spec.rules".into(),
                "no rules: this TrafficTarget grants nothing",
            );
        }
        for (i, r) in tt.rules.iter().enumerate() {
            match r.kind.as_str() {
                "HTTPRouteGroup" => {}
                "TCPRoute" | "UDPRoute" if !r.matches.is_empty() => self.warning(
                    format!("spec.rules[{i}].matches"),
                    format!("matches name HTTPRouteGroup matches; a {} rule ignores them", r.kind),
                ),
                "TCPRoute" | "UDPRoute" => {}
                other => self.error(
                    format!("spec.rules[{i}].kind"),
                    format!("unknown route kind {other:?}: expected HTTPRouteGroup, TCPRoute or UDPRoute"),
                ),
            }
            if r.name.is_empty() {
                self.error(format!("spec.rules[{i}].name"), "is required");
            } else if r.name.contains('.') || r.name.contains('/') {
                self.error(
                    format!("spec.rules[{i}].name"),
                    format!(
                        "{:?}: routes are referenced by name in the TrafficTarget's own namespace",
                        r.name
                    ),
                );
            }
            for (j, m) in r.matches.iter().enumerate() {
                if m.is_empty() {
                    self.error(format!("spec.rules[{i}].matches[{j}]"), "must name a match");
                }
            }
        }

        if tt.sources.is_empty() {
            self.warning(
                "spec.sources".into(),
                "no sources: this TrafficTarget grants nothing",
            );
        }
        let own_ns = self.object.namespace.clone();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, s) in tt.sources.iter().enumerate() {
            self.subject(&format!("spec.sources[{i}]"), s);
            let ns = s.namespace.as_deref().unwrap_or(&own_ns);
            if let Some(first) = seen.insert((s.name.as_str(), ns), i) {
                self.warning(
                    format!("spec.sources[{i}]"),
                    format!("duplicate source {:?} (also spec.sources[{first}])", s.name),
                );
            }
        }
    }

    fn http_route_group(&mut self, g: &HttpRouteGroup) {
        if g.matches.is_empty() {
            self.warning(
                "spec.matches".into(),
                "no matches: rules referring to this group allow nothing",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, m) in g.matches.iter().enumerate() {
            let at = format!("spec.matches[{i}]");
            if m.name.is_empty() {
                self.error(format!("{at}.name"), "is required");
            } else if let Some(first) = seen.insert(m.name.as_str(), i) {
                self.error(
                    format!("{at}.name"),
                    format!(
                        "duplicate match name {:?} (also spec.matches[{first}])",
                        m.name
                    ),
                );
            }
            if let Some(re) = m.path_regex.as_deref()
                && let Err(e) = anchored_regex(re)
            {
                self.error(
                    format!("{at}.pathRegex"),
                    format!("invalid regex {re:?}: {}", first_line(&e)),
                );
            }
            for (j, method) in m.methods.iter().enumerate() {
                if !specs::HTTP_METHODS.contains(&method.as_str()) {
                    self.error(
                        format!("{at}.methods[{j}]"),
                        format!(
                            "unknown method {method:?}: expected one of {}",
                            specs::HTTP_METHODS.join(", ")
                        ),
                    );
                }
            }
            for (k, (name, value)) in m.headers.iter().enumerate() {
                if !is_header_name(name) {
                    self.error(
                        format!("{at}.headers[{k}]"),
                        format!("{name:?} is not a valid header name"),
                    );
                }
                if let Err(e) = anchored_regex(value) {
                    self.error(
                        format!("{at}.headers[{k}]"),
                        format!(
                            "header {name:?}: invalid regex {value:?}: {}",
                            first_line(&e)
                        ),
                    );
                }
            }
        }
    }

    fn ports(&mut self, m: &PortMatch) {
        let mut seen: HashMap<u16, usize> = HashMap::new();
        for (i, &p) in m.ports.iter().enumerate() {
            if p == 0 {
                self.error(format!("spec.matches.ports[{i}]"), "must be 1–65535");
            } else if let Some(first) = seen.insert(p, i) {
                self.warning(
                    format!("spec.matches.ports[{i}]"),
                    format!("duplicate port {p} (also spec.matches.ports[{first}])"),
                );
            }
        }
    }
}

/// The regex crate's messages span several lines with a caret diagram; one line reads better in
/// `file:line: …` output and in status conditions.
fn first_line(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(s.lines().next().unwrap_or(""))
        .trim()
        .to_string()
}
