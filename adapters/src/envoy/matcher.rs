//! Request matchers shared by routes and RBAC permissions: both match an [`HttpMatch`] the same
//! way (headers and methods as header matchers, paths as full-match RE2 regexes).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::{
    config::route::v3::{HeaderMatcher, header_matcher},
    r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
};

use crate::model::HttpMatch;

/// Header conditions of a match: `:method`, then the headers, sorted. RBAC permissions match
/// the same way.
pub(super) fn header_matchers(m: &HttpMatch) -> Vec<HeaderMatcher> {
    let mut out = Vec::new();
    let methods: BTreeSet<&str> = m.methods.iter().map(String::as_str).collect();
    let method = match methods.len() {
        0 => None,
        1 => methods
            .first()
            .map(|m| string_matcher::MatchPattern::Exact((*m).to_owned())),
        _ => {
            let alternatives: Vec<String> = methods.iter().map(|m| escape(m)).collect();
            Some(string_matcher::MatchPattern::SafeRegex(regex(
                &alternatives.join("|"),
            )))
        }
    };
    if let Some(pattern) = method {
        out.push(header(
            ":method",
            StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            },
        ));
    }
    let mut headers: Vec<(String, &str)> = m
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
        .collect();
    headers.sort();
    headers.dedup();
    for (name, value) in headers {
        // HTTP/2 and Envoy carry the Host header as `:authority`.
        let name = if name == "host" {
            ":authority"
        } else {
            name.as_str()
        };
        out.push(header(name, regex_string_matcher(value)));
    }
    out
}

/// A full-match regex string matcher (Envoy's `safe_regex` always matches the whole input).
pub(super) fn regex_string_matcher(pattern: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(pattern))),
        ..Default::default()
    }
}

fn header(name: &str, matcher: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(matcher)),
        ..Default::default()
    }
}

pub(super) fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..Default::default()
    }
}

/// Escapes RE2 metacharacters; methods are tokens, which may hold a few of them (`.`, `+`…).
fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
