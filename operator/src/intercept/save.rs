//! `iptables-save` output, read back: which tables, chains and rules a network namespace holds.

use std::collections::BTreeMap;

/// The chains every table of this kind starts with; they are not "rules someone installed".
const BUILTIN_CHAINS: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// What `iptables-save` printed: tables by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    tables: BTreeMap<String, Table>,
}

/// One `*table` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Declared chains (`:NAME POLICY [packets:bytes]`), in order.
    pub chains: Vec<String>,
    /// `-A CHAIN spec` lines, in order.
    pub rules: Vec<Rule>,
}

/// One `-A` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    /// Everything after `-A CHAIN `, as printed.
    pub spec: String,
}

// === impl Saved ===

impl Saved {
    /// Reads `iptables-save` (or `iptables-restore` input) text. Comments, `COMMIT` and lines it
    /// does not know are skipped: this is for looking, not for validating.
    pub fn parse(text: &str) -> Self {
        let mut saved = Saved::default();
        let mut table: Option<&mut Table> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                table = Some(saved.tables.entry(name.to_owned()).or_default());
            } else if let Some(t) = table.as_deref_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    if let Some(name) = decl.split_whitespace().next() {
                        t.chains.push(name.to_owned());
                    }
                } else if let Some(rest) = line.strip_prefix("-A ") {
                    let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                    t.rules.push(Rule {
                        chain: chain.to_owned(),
                        spec: spec.to_owned(),
                    });
                }
            }
        }
        saved
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// Whether any table declares `chain`.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.tables
            .values()
            .any(|t| t.chains.iter().any(|c| c == chain))
    }

    /// Rules and user-defined chains over all tables: what someone installed.
    pub fn installed(&self) -> usize {
        self.tables
            .values()
            .map(|t| {
                let user_chains = t
                    .chains
                    .iter()
                    .filter(|c| !BUILTIN_CHAINS.contains(&c.as_str()))
                    .count();
                t.rules.len() + user_chains
            })
            .sum()
    }
}

// === impl Table ===

impl Table {
    /// The rules of `chain`, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

// === impl Rule ===

impl Rule {
    /// The chain or target after `-j` (`-g` too), if any.
    pub fn target(&self) -> Option<String> {
        let words = words(&self.spec);
        words
            .iter()
            .position(|w| w == "-j" || w == "-g" || w == "--jump" || w == "--goto")
            .and_then(|i| words.get(i + 1).cloned())
    }
}

/// Splits a rule spec into words as `iptables-restore` does: whitespace separates, double quotes
/// group (a backslash escapes the next character inside them).
fn words(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                word.extend(chars.next());
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
