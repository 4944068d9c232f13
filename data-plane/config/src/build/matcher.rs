//! String, header and path matchers, shared by routes and RBAC; regexes are compiled here.
//!
//! Envoy's `safe_regex` is RE2 and always matches the whole input; the `regex` crate's syntax
//! is close to RE2's (both refuse backreferences and lookaround), and every regex is compiled
//! anchored. Case-insensitive literal matches become regexes too, so the data path only knows
//! case-sensitive literals.

use envoy_types::pb::envoy::{
    config::route::v3::{
        HeaderMatcher, RouteMatch, header_matcher::HeaderMatchSpecifier, route_match,
    },
    r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern},
};
use regex::{Regex, RegexBuilder};

use super::{At, Invalid, unsupported};
use crate::{HeaderMatch, PathMatch, StringMatch};

/// The most memory one compiled regex may take, in bytes (the `regex` crate's `size_limit`):
/// generous for path and header patterns, small enough that a hostile pattern cannot make
/// every configuration update expensive.
pub(super) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A `RegexMatcher`, anchored; errors point at its `regex` field.
pub(super) fn regex(m: &RegexMatcher) -> Result<Regex, Invalid> {
    let regex = anchored(&m.regex).at("regex")?;
    only!(m => RegexMatcher { regex } unset { engine_type });
    Ok(regex)
}

/// Compiles `pattern` so that it must match the whole input.
pub(super) fn anchored(pattern: &str) -> Result<Regex, Invalid> {
    // The pattern must parse on its own: wrapped, `a)|(b` would parse as an unanchored
    // alternation. A size limit of zero stops right after parsing, so this costs no compile.
    if let Err(regex::Error::Syntax(_)) = RegexBuilder::new(pattern).size_limit(0).build() {
        return Err(unsupported("", "not a valid regular expression"));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => unsupported("", "regular expression is too large"),
            _ => unsupported("", "not a valid regular expression"),
        })
}

/// A `StringMatcher`.
pub(super) fn string(m: &StringMatcher) -> Result<StringMatch, Invalid> {
    only!(m => StringMatcher { match_pattern, ignore_case } unset {});
    let literal = |s: &String, wrap: fn(&str) -> String, plain: fn(String) -> StringMatch| {
        if m.ignore_case {
            anchored(&wrap(&format!("(?i:{})", regex::escape(s))))
                .map(StringMatch::Regex)
                .at("ignore_case")
        } else {
            Ok(plain(s.clone()))
        }
    };
    match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => literal(s, |r| r.to_owned(), StringMatch::Exact),
        Some(MatchPattern::Prefix(s)) => literal(s, |r| format!("{r}(?s:.*)"), StringMatch::Prefix),
        Some(MatchPattern::Suffix(s)) => literal(s, |r| format!("(?s:.*){r}"), StringMatch::Suffix),
        Some(MatchPattern::Contains(s)) => {
            literal(s, |r| format!("(?s:.*){r}(?s:.*)"), StringMatch::Contains)
        }
        // `ignore_case` has no effect on regexes in Envoy either.
        Some(MatchPattern::SafeRegex(r)) => regex(r).map(StringMatch::Regex).at("safe_regex"),
        Some(MatchPattern::Custom(_)) => Err(unsupported(
            "custom",
            "custom string matchers are not supported",
        )),
        None => Err(unsupported("match_pattern", "a match pattern is required")),
    }
}

/// A `HeaderMatcher`. The name is lower-cased (header names are case-insensitive); a matcher
/// without a specifier, or `present_match: true`, matches any value of a present header, and
/// `present_match: false` matches an absent one. The deprecated specifiers (`exact_match`…)
/// are still accepted, as Envoy does.
#[allow(deprecated)]
pub(super) fn header(h: &HeaderMatcher) -> Result<HeaderMatch, Invalid> {
    if h.name.is_empty() {
        return Err(unsupported("name", "must not be empty"));
    }
    if h.treat_missing_header_as_empty {
        return Err(unsupported(
            "treat_missing_header_as_empty",
            "is not supported",
        ));
    }
    let (matcher, absent) = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(m)) => (string(m).at("string_match")?, false),
        Some(HeaderMatchSpecifier::ExactMatch(s)) => (StringMatch::Exact(s.clone()), false),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => (StringMatch::Prefix(s.clone()), false),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => (StringMatch::Suffix(s.clone()), false),
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => (StringMatch::Contains(s.clone()), false),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            (StringMatch::Regex(regex(r).at("safe_regex_match")?), false)
        }
        Some(HeaderMatchSpecifier::PresentMatch(present)) => (StringMatch::Present, !present),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(unsupported(
                "range_match",
                "range matches are not supported",
            ));
        }
        None => (StringMatch::Present, false),
    };
    only!(h => HeaderMatcher {
        name, invert_match, header_match_specifier, treat_missing_header_as_empty,
    } unset {});
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        matcher,
        invert: h.invert_match != absent,
    })
}

/// The path part of a `RouteMatch`; errors are relative to the `RouteMatch`.
pub(super) fn path(m: &RouteMatch) -> Result<PathMatch, Invalid> {
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let insensitive = |literal: &str, tail: &str| {
        anchored(&format!("(?i:{}){tail}", regex::escape(literal)))
            .map(PathMatch::Regex)
            .at("case_sensitive")
    };
    use route_match::PathSpecifier;
    match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if case_sensitive => Ok(PathMatch::Prefix(p.clone())),
        Some(PathSpecifier::Prefix(p)) => insensitive(p, "(?s:.*)"),
        Some(PathSpecifier::Path(p)) if case_sensitive => Ok(PathMatch::Exact(p.clone())),
        Some(PathSpecifier::Path(p)) => insensitive(p, ""),
        Some(PathSpecifier::SafeRegex(r)) => regex(r).map(PathMatch::Regex).at("safe_regex"),
        Some(PathSpecifier::ConnectMatcher(_)) => Err(unsupported(
            "connect_matcher",
            "CONNECT requests are not supported",
        )),
        Some(PathSpecifier::PathSeparatedPrefix(_)) => Err(unsupported(
            "path_separated_prefix",
            "path-separated prefixes are not supported",
        )),
        Some(PathSpecifier::PathMatchPolicy(_)) => Err(unsupported(
            "path_match_policy",
            "path match policies are not supported",
        )),
        None => Err(unsupported("path_specifier", "a path match is required")),
    }
}
