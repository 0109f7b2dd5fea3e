//! Bad-query rules: which queries to reject, cancel when they overrun, or
//! only log, decided from the classified query and the session alone.
//!
//! Rules are checked in order and the first whose conditions all hold
//! decides. Conditions on the query's shape (`tables`, `statement`,
//! `cross_join`, `select_star`, `no_where`, `no_limit`, `min_joins`) look at
//! the parsed statement, so case, whitespace, comments and quoting cannot
//! dodge them. A text of several statements is judged statement by
//! statement, and the most severe verdict wins: one rejected statement
//! rejects the whole text before any of it runs. Text that does not parse
//! has no shape: a rule with a shape condition does not match it, while
//! `pattern`, `fingerprint` and the session conditions still apply.
//!
//! [`RuleSet::evaluate`] is the hot path. The conditions that depend on
//! the classification alone (shape, `tables`, `fingerprint`) are judged once
//! per cached classification ([`RuleMemo`]); a query then pays only for its
//! session's and its text's conditions, on the rules left — with 50 rules
//! of which none fits the query's shape, nothing. No allocation unless a
//! remaining rule has a `pattern` and the text has comments.
//! [`RuleSet::explain`] reports every condition's verdict for `sluice explain`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use regex::{Regex, RegexSet, SetMatches};

use super::classifier::{Classification, StatementFacts, StatementKind};
use super::fingerprint::{Fingerprint, strip_comments};

/// Who sent a query.
#[derive(Clone, Copy, Debug)]
pub struct SessionInfo<'a> {
    pub user: &'a str,
    pub application: &'a str,
    pub database: &'a str,
    pub client_addr: Option<IpAddr>,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with an error; nothing reaches the node.
    Reject,
    /// Let it run; cancel it on the node once it runs longer than `budget`.
    Cancel { budget: Duration },
    /// Count and log the match only.
    Log,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Cancel { .. } => "cancel",
            Action::Log => "log",
        }
    }

    /// Reject beats cancel beats log; of two cancels the shorter budget.
    fn severity(self) -> (u8, std::cmp::Reverse<Duration>) {
        match self {
            Action::Reject => (2, std::cmp::Reverse(Duration::ZERO)),
            Action::Cancel { budget } => (1, std::cmp::Reverse(budget)),
            Action::Log => (0, std::cmp::Reverse(Duration::ZERO)),
        }
    }
}

/// A shell-style pattern: `*` any run of characters, `?` one character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    case_insensitive: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_string(),
            case_insensitive: false,
        }
    }

    /// Relation names: unquoted names are folded to lower case already, so
    /// the pattern is compared without regard to case.
    pub fn relation(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_lowercase(),
            case_insensitive: true,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.case_insensitive && text.bytes().any(|b| b.is_ascii_uppercase()) {
            return glob_match(self.pattern.as_bytes(), text.to_lowercase().as_bytes());
        }
        glob_match(self.pattern.as_bytes(), text.as_bytes())
    }

    /// A relation glob against a resolved relation: a pattern with a dot
    /// matches `schema.name` (a bare name is taken to be in `public`), one
    /// without a dot matches the name alone.
    fn matches_relation(&self, relation: &str) -> bool {
        if self.pattern.contains('.') {
            if relation.contains('.') {
                self.matches(relation)
            } else {
                self.matches(&format!("public.{relation}"))
            }
        } else {
            self.matches(relation.rsplit('.').next().unwrap_or(relation))
        }
    }
}

/// Iterative glob matching with one backtrack point: linear for patterns
/// with one `*`, and never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A rule's regular expression, and where the rule set's [`RegexSet`]
/// reports it.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub regex: Regex,
    /// Its index among the rule set's patterns, set by [`RuleSet::new`].
    slot: Option<usize>,
}

impl Pattern {
    pub fn new(regex: Regex) -> Pattern {
        Pattern { regex, slot: None }
    }
}

/// One condition of a rule; every one present must hold.
#[derive(Clone, Debug)]
pub enum Condition {
    Users(Vec<Glob>),
    Applications(Vec<Glob>),
    Databases(Vec<Glob>),
    ClientAddrs(Vec<IpNet>),
    /// On the text with comments stripped.
    Pattern(Pattern),
    /// The statement's or the whole text's fingerprint.
    Fingerprint(Fingerprint),
    /// Any referenced relation matches one.
    Tables(Vec<Glob>),
    Statement(Vec<StatementKind>),
    CrossJoin(bool),
    SelectStar(bool),
    /// With `tables`: one of those tables is read without a WHERE clause;
    /// without: any table is.
    NoWhere(bool),
    NoLimit(bool),
    MinJoins(usize),
}

impl Condition {
    /// Depends only on the classification (not on the session or the exact
    /// text), so its verdict can be kept with a cached classification.
    fn is_of_classification(&self) -> bool {
        self.is_shape() || matches!(self, Condition::Fingerprint(_))
    }

    /// Needs the parsed statement to be judged.
    fn is_shape(&self) -> bool {
        !matches!(
            self,
            Condition::Users(_)
                | Condition::Applications(_)
                | Condition::Databases(_)
                | Condition::ClientAddrs(_)
                | Condition::Pattern(_)
                | Condition::Fingerprint(_)
        )
    }

    /// The condition as the config writes it.
    pub fn key(&self) -> String {
        let globs = |g: &[Glob]| {
            let v: Vec<&str> = g.iter().map(Glob::as_str).collect();
            format!("{v:?}")
        };
        match self {
            Condition::Users(g) => format!("users = {}", globs(g)),
            Condition::Applications(g) => format!("applications = {}", globs(g)),
            Condition::Databases(g) => format!("databases = {}", globs(g)),
            Condition::ClientAddrs(n) => {
                let v: Vec<String> = n.iter().map(|n| n.to_string()).collect();
                format!("client_addrs = {v:?}")
            }
            Condition::Pattern(p) => format!("pattern = {:?}", p.regex.as_str()),
            Condition::Fingerprint(f) => format!("fingerprint = \"{f}\""),
            Condition::Tables(g) => format!("tables = {}", globs(g)),
            Condition::Statement(k) => {
                let v: Vec<&str> = k.iter().map(|k| k.name()).collect();
                format!("statement = {v:?}")
            }
            Condition::CrossJoin(b) => format!("cross_join = {b}"),
            Condition::SelectStar(b) => format!("select_star = {b}"),
            Condition::NoWhere(b) => format!("no_where = {b}"),
            Condition::NoLimit(b) => format!("no_limit = {b}"),
            Condition::MinJoins(n) => format!("min_joins = {n}"),
        }
    }
}

/// One `[[rules]]` entry.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub conditions: Vec<Condition>,
    pub action: Action,
    /// Shown to the user.
    pub message: Arc<str>,
}

/// The decision of the first matching rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Arc<str>,
    pub action: Action,
    pub message: Arc<str>,
}

/// What one evaluation looks at.
struct Subject<'a> {
    session: &'a SessionInfo<'a>,
    /// `None` for text that does not parse.
    statement: Option<&'a StatementFacts>,
    /// Relations a token scan found in text that does not parse.
    scanned: &'a std::collections::BTreeSet<String>,
    text_fingerprint: Fingerprint,
    /// The text with comments stripped, when some rule has a pattern.
    text: &'a str,
    /// Which of the rule set's patterns match `text`, found in one pass;
    /// `None`: each pattern is tried on its own.
    pattern_hits: Option<&'a SetMatches>,
}

/// Every `pattern` of a rule set, matched together: one pass over the text
/// instead of one per pattern (50 rules with 10 patterns cost 10 scans of
/// every query otherwise).
#[derive(Clone, Debug)]
struct Patterns {
    set: RegexSet,
}

impl Patterns {
    /// The set of `rules`' patterns; each pattern learns its slot in it.
    fn of(rules: &mut [Rule]) -> Option<Patterns> {
        let mut sources: Vec<String> = Vec::new();
        let mut each = rules
            .iter_mut()
            .flat_map(|r| r.conditions.iter_mut())
            .filter_map(|c| match c {
                Condition::Pattern(p) => Some(p),
                _ => None,
            })
            .peekable();
        each.peek()?;
        for p in each {
            let source = p.regex.as_str();
            let slot = match sources.iter().position(|s| s == source) {
                Some(i) => i,
                None => {
                    sources.push(source.to_string());
                    sources.len() - 1
                }
            };
            p.slot = Some(slot);
        }
        // Each one compiled alone already; together they only fail by size,
        // and then each is tried on its own.
        match RegexSet::new(&sources) {
            Ok(set) => Some(Patterns { set }),
            Err(_) => {
                for rule in rules.iter_mut() {
                    for c in &mut rule.conditions {
                        if let Condition::Pattern(p) = c {
                            p.slot = None;
                        }
                    }
                }
                None
            }
        }
    }
}

/// The rules of one configuration, in order.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    patterns: Option<Patterns>,
    /// Tells rule sets apart in [`RuleMemo`]s (0: the empty default).
    id: u64,
}

/// For one classification, the rules of one rule set whose conditions on
/// the classification hold, by statement (text that does not parse: one
/// list). Kept in the [`Classification`]: the classification cache belongs
/// to one configuration generation, whose rule set it then always meets.
#[derive(Clone, Debug, Default)]
pub struct RuleMemo(OnceLock<(u64, Candidates)>);

/// What a [`RuleMemo`] keeps.
#[derive(Clone, Debug)]
struct Candidates {
    /// Indices into the rule set's rules, by statement.
    by_statement: Box<[Box<[u32]>]>,
    /// One of them has a `pattern`: the query's text must be looked at.
    reads_text: bool,
}

/// A memo is a cache beside the classification, not part of what it says.
impl PartialEq for RuleMemo {
    fn eq(&self, _: &RuleMemo) -> bool {
        true
    }
}

impl Eq for RuleMemo {}

static RULE_SET_IDS: AtomicU64 = AtomicU64::new(1);

impl RuleSet {
    /// Whether any rule cancels queries that overrun a time budget.
    pub fn has_budgets(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.action, Action::Cancel { .. }))
    }

    pub fn new(mut rules: Vec<Rule>) -> RuleSet {
        let patterns = Patterns::of(&mut rules);
        RuleSet {
            rules,
            patterns,
            id: RULE_SET_IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The rules whose conditions on `class` hold, statement by statement.
    fn candidates(&self, class: &Classification) -> Candidates {
        let nobody = SessionInfo {
            user: "",
            application: "",
            database: "",
            client_addr: None,
        };
        let for_statement = |statement: Option<&StatementFacts>| -> Box<[u32]> {
            let subject = Subject {
                session: &nobody,
                statement,
                scanned: &class.scanned_relations,
                text_fingerprint: class.fingerprint,
                text: "",
                pattern_hits: None,
            };
            (0u32..)
                .zip(&self.rules)
                .filter(|(_, rule)| {
                    rule.conditions
                        .iter()
                        .filter(|c| c.is_of_classification())
                        .all(|c| holds(c, rule, &subject) == Some(true))
                })
                .map(|(i, _)| i)
                .collect()
        };
        let statements = statements_of(class);
        // Text without statements is judged once, as a whole.
        let by_statement: Box<[Box<[u32]>]> = (0..statements.len().max(1))
            .map(|i| for_statement(statements.get(i)))
            .collect();
        let reads_text = by_statement.iter().flatten().any(|&i| {
            self.rules[i as usize]
                .conditions
                .iter()
                .any(|c| matches!(c, Condition::Pattern(_)))
        });
        Candidates {
            by_statement,
            reads_text,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The verdict on a query text, or `None` when no rule matches.
    pub fn evaluate(
        &self,
        class: &Classification,
        session: &SessionInfo<'_>,
        text: &str,
    ) -> Option<Verdict> {
        if self.rules.is_empty() {
            return None;
        }
        let memo = class
            .rule_memo
            .0
            .get_or_init(|| (self.id, self.candidates(class)));
        let computed;
        let candidates = if memo.0 == self.id {
            &memo.1
        } else {
            computed = self.candidates(class);
            &computed
        };
        if candidates.by_statement.iter().all(|c| c.is_empty()) {
            return None;
        }
        // The text is looked at only when a rule left has a pattern.
        let stripped = if candidates.reads_text {
            strip_comments(text)
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        let hits = self
            .patterns
            .as_ref()
            .filter(|_| candidates.reads_text)
            .map(|p| p.set.matches(&stripped));
        let mut best: Option<&Rule> = None;
        let statements = statements_of(class);
        // One list of candidates per statement, or one for the whole text.
        for (i, candidates) in candidates.by_statement.iter().enumerate() {
            let subject = Subject {
                session,
                statement: statements.get(i),
                scanned: &class.scanned_relations,
                text_fingerprint: class.fingerprint,
                text: &stripped,
                pattern_hits: hits.as_ref(),
            };
            // The first rule, in order, whose remaining conditions hold.
            let first = candidates
                .iter()
                .map(|&i| &self.rules[i as usize])
                .find(|rule| {
                    rule.conditions
                        .iter()
                        .filter(|c| !c.is_of_classification())
                        .all(|c| holds(c, rule, &subject) == Some(true))
                });
            if let Some(rule) = first
                && best.is_none_or(|b| rule.action.severity() > b.action.severity())
            {
                best = Some(rule);
            }
        }
        best.map(|r| Verdict {
            rule: r.name.clone(),
            action: r.action,
            message: r.message.clone(),
        })
    }

    /// Every rule, condition by condition, for `sluice explain`.
    pub fn explain(&self, class: &Classification, session: &SessionInfo<'_>, text: &str) -> String {
        let stripped = strip_comments(text);
        let mut out = String::new();
        let statements: Vec<Option<&StatementFacts>> = match class.facts.as_ref() {
            Some(f) if !f.statements.is_empty() => f.statements.iter().map(Some).collect(),
            _ => vec![None],
        };
        for (i, statement) in statements.iter().enumerate() {
            let subject = Subject {
                session,
                statement: *statement,
                scanned: &class.scanned_relations,
                text_fingerprint: class.fingerprint,
                text: &stripped,
                pattern_hits: None,
            };
            match statement {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "statement {} ({}, fingerprint {}):",
                        i + 1,
                        s.kind.name(),
                        s.fingerprint
                    );
                }
                None if !class.scanned_relations.is_empty() => {
                    let _ = writeln!(
                        out,
                        "the text does not parse (fingerprint {}): pattern, fingerprint, session and tables (from a token scan) conditions apply",
                        class.fingerprint
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "the text does not parse (fingerprint {}): only pattern, fingerprint and session conditions apply",
                        class.fingerprint
                    );
                }
            }
            let mut decided = false;
            for rule in &self.rules {
                let hit = matches(rule, &subject);
                let verdict = match (hit, decided) {
                    (true, false) => "MATCHES: this rule decides",
                    (true, true) => "would match, but an earlier rule decided",
                    (false, _) => "does not match",
                };
                let _ = writeln!(
                    out,
                    "  rule {:?} ({}): {verdict}",
                    rule.name,
                    rule.action.name()
                );
                decided |= hit;
                for c in &rule.conditions {
                    let (state, why) = match holds(c, rule, &subject) {
                        Some(true) => ("holds", describe(c, &subject)),
                        Some(false) => ("fails", describe(c, &subject)),
                        None => ("cannot hold", "the text does not parse".to_string()),
                    };
                    let _ = writeln!(out, "    {:<40} {state}: {why}", c.key());
                }
            }
            if !decided {
                let _ = writeln!(out, "  no rule matches");
            }
        }
        match self.evaluate(class, session, text) {
            Some(v) => {
                let _ = writeln!(out, "verdict: {} by rule {:?}", v.action.name(), v.rule);
            }
            None => {
                let _ = writeln!(out, "verdict: no rule matches; the query runs");
            }
        }
        out
    }
}

/// A classification's parsed statements; none for text that does not parse.
fn statements_of(class: &Classification) -> &[StatementFacts] {
    class.facts.as_ref().map_or(&[], |f| &f.statements)
}

fn matches(rule: &Rule, subject: &Subject<'_>) -> bool {
    rule.conditions
        .iter()
        .all(|c| holds(c, rule, subject) == Some(true))
}

fn any_glob(globs: &[Glob], value: &str) -> bool {
    globs.iter().any(|g| g.matches(value))
}

/// Whether `c` holds; `None` when it needs a parsed statement and there is none.
fn holds(c: &Condition, rule: &Rule, subject: &Subject<'_>) -> Option<bool> {
    let session = subject.session;
    // Unparsed text: `tables` can still look at the token scan's relations.
    let scanned_tables = matches!(c, Condition::Tables(_)) && !subject.scanned.is_empty();
    if c.is_shape() && subject.statement.is_none() && !scanned_tables {
        return None;
    }
    let s = subject.statement;
    Some(match c {
        Condition::Users(g) => any_glob(g, session.user),
        Condition::Applications(g) => any_glob(g, session.application),
        Condition::Databases(g) => any_glob(g, session.database),
        Condition::ClientAddrs(nets) => session
            .client_addr
            .is_some_and(|a| nets.iter().any(|n| n.contains(&a))),
        Condition::Pattern(p) => match (subject.pattern_hits, p.slot) {
            (Some(hits), Some(slot)) => hits.matched(slot),
            _ => p.regex.is_match(subject.text),
        },
        Condition::Fingerprint(f) => {
            *f == subject.text_fingerprint || s.is_some_and(|s| s.fingerprint == *f)
        }
        Condition::Tables(g) => s
            .map(|s| &s.relations)
            .unwrap_or(subject.scanned)
            .iter()
            .any(|r| g.iter().any(|g| g.matches_relation(r))),
        Condition::Statement(kinds) => kinds.contains(&s?.kind),
        Condition::CrossJoin(want) => s?.cross_join == *want,
        Condition::SelectStar(want) => s?.select_star == *want,
        Condition::NoWhere(want) => {
            let tables = rule.conditions.iter().find_map(|c| match c {
                Condition::Tables(g) => Some(g),
                _ => None,
            });
            let unfiltered = s?
                .tables_without_where
                .iter()
                .any(|r| tables.is_none_or(|g| g.iter().any(|g| g.matches_relation(r))));
            unfiltered == *want
        }
        Condition::NoLimit(want) => match s?.outer_limit {
            Some(has_limit) => has_limit != *want,
            // Only queries have a LIMIT to miss.
            None => !*want,
        },
        Condition::MinJoins(n) => s?.joins >= *n,
    })
}

/// What the condition saw, for `sluice explain`.
fn describe(c: &Condition, subject: &Subject<'_>) -> String {
    let session = subject.session;
    let list = |set: &std::collections::BTreeSet<String>| {
        if set.is_empty() {
            "none".to_string()
        } else {
            set.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    let Some(s) = subject.statement else {
        return match c {
            Condition::Fingerprint(_) => {
                format!("the text's fingerprint is {}", subject.text_fingerprint)
            }
            Condition::Pattern(_) => "on the text without comments".into(),
            Condition::Tables(_) => {
                format!("relations found by a token scan: {}", list(subject.scanned))
            }
            _ => describe_session(c, session),
        };
    };
    match c {
        Condition::Pattern(_) => "on the text without comments".into(),
        Condition::Fingerprint(_) => format!(
            "the statement's fingerprint is {}, the text's {}",
            s.fingerprint, subject.text_fingerprint
        ),
        Condition::Tables(_) => format!("relations: {}", list(&s.relations)),
        Condition::Statement(_) => format!("a {} statement", s.kind.name()),
        Condition::CrossJoin(_) => format!("cross join: {}", s.cross_join),
        Condition::SelectStar(_) => format!("* projection: {}", s.select_star),
        Condition::NoWhere(_) => format!(
            "relations read without WHERE: {}",
            list(&s.tables_without_where)
        ),
        Condition::NoLimit(_) => match s.outer_limit {
            Some(true) => "the outermost query has LIMIT/FETCH".into(),
            Some(false) => "the outermost query has no LIMIT/FETCH".into(),
            None => "not a query".into(),
        },
        Condition::MinJoins(_) => format!("{} join(s)", s.joins),
        _ => describe_session(c, session),
    }
}

fn describe_session(c: &Condition, session: &SessionInfo<'_>) -> String {
    match c {
        Condition::Users(_) => format!("user {:?}", session.user),
        Condition::Applications(_) => format!("application {:?}", session.application),
        Condition::Databases(_) => format!("database {:?}", session.database),
        Condition::ClientAddrs(_) => match session.client_addr {
            Some(a) => format!("client address {a}"),
            None => "no client address".into(),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{CatalogPolicy, classify};

    fn rule(name: &str, action: Action, conditions: Vec<Condition>) -> Rule {
        Rule {
            name: name.into(),
            conditions,
            action,
            message: format!("{name} says no").into(),
        }
    }

    const SESSION: SessionInfo<'static> = SessionInfo {
        user: "tableau_etl",
        application: "Tableau 2024.1",
        database: "dwh",
        client_addr: None,
    };

    fn verdict(rules: &RuleSet, sql: &str) -> Option<String> {
        verdict_as(rules, sql, &SESSION)
    }

    fn verdict_as(rules: &RuleSet, sql: &str, session: &SessionInfo<'_>) -> Option<String> {
        let class = classify(sql, &CatalogPolicy::default());
        rules
            .evaluate(&class, session, sql)
            .map(|v| format!("{}:{}", v.rule, v.action.name()))
    }

    fn one(c: Condition) -> RuleSet {
        RuleSet::new(vec![rule("r", Action::Reject, vec![c])])
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(Glob::new("tableau_*").matches("tableau_etl"));
        assert!(!Glob::new("tableau_*").matches("Tableau_etl"));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
        assert!(Glob::new("?x").matches("ax"));
        assert!(Glob::relation("public.Events*").matches("public.events_2024"));
        assert!(Glob::relation("public.events*").matches_relation("events"));
        assert!(Glob::relation("events").matches_relation("sales.events"));
        assert!(!Glob::relation("sales.*").matches_relation("events"));
    }

    #[test]
    fn tables_conditions_see_relations_of_vertica_only_syntax() {
        let rules = one(Condition::Tables(vec![Glob::relation("sales.orders")]));
        let sql = "SELECT id FROM sales.orders LIMIT 1 OVER (PARTITION BY region ORDER BY ts)";
        assert!(
            classify(sql, &CatalogPolicy::default())
                .parse_error
                .is_some()
        );
        assert_eq!(verdict(&rules, sql).as_deref(), Some("r:reject"));
        let other = "SELECT id FROM sales.refunds LIMIT 1 OVER (PARTITION BY region ORDER BY ts)";
        assert_eq!(verdict(&rules, other), None);
        // Other shape conditions still cannot hold on unparsed text.
        let both = RuleSet::new(vec![rule(
            "r",
            Action::Reject,
            vec![
                Condition::Tables(vec![Glob::relation("sales.orders")]),
                Condition::SelectStar(false),
            ],
        )]);
        assert_eq!(verdict(&both, sql), None);
    }

    #[test]
    fn select_star_is_found_anywhere_but_not_in_count() {
        let rules = one(Condition::SelectStar(true));
        for sql in [
            "SELECT * FROM events",
            "select e.* from events e",
            "WITH x AS (SELECT * FROM events) SELECT id FROM x",
            "SELECT id FROM (SELECT * FROM events) sub",
            "SELECT 1; SELECT * FROM \"Events\"",
        ] {
            assert_eq!(verdict(&rules, sql).as_deref(), Some("r:reject"), "{sql}");
        }
        for sql in [
            "SELECT count(*) FROM events",
            "SELECT id FROM events",
            "SELECT 1",
        ] {
            assert_eq!(verdict(&rules, sql), None, "{sql}");
        }
    }

    #[test]
    fn cross_joins_explicit_or_by_comma() {
        let rules = one(Condition::CrossJoin(true));
        for sql in [
            "SELECT a.id FROM a CROSS JOIN b",
            "SELECT a.id FROM a, b",
            "SELECT a.id FROM a, b WHERE a.x > 1",
            "SELECT a.id FROM a, b, c WHERE a.id = b.a_id",
            "SELECT id FROM (SELECT x.id FROM x, y) s",
        ] {
            assert_eq!(verdict(&rules, sql).as_deref(), Some("r:reject"), "{sql}");
        }
        for sql in [
            "SELECT a.id FROM a JOIN b ON a.id = b.a_id",
            "SELECT a.id FROM a, b WHERE a.id = b.a_id",
            "SELECT p.id FROM a p, b q, c WHERE p.id = q.a_id AND c.k = q.k",
        ] {
            assert_eq!(verdict(&rules, sql), None, "{sql}");
        }
    }

    #[test]
    fn no_where_no_limit_and_joins() {
        let rules = RuleSet::new(vec![rule(
            "scan",
            Action::Reject,
            vec![
                Condition::Tables(vec![Glob::relation("public.events*")]),
                Condition::NoWhere(true),
            ],
        )]);
        assert!(verdict(&rules, "SELECT id FROM events").is_some());
        assert!(
            verdict(
                &rules,
                "SELECT id FROM public.events_2024 JOIN users ON true"
            )
            .is_some()
        );
        assert!(verdict(&rules, "SELECT id FROM events WHERE day = '2024-01-01'").is_none());
        assert!(verdict(&rules, "SELECT id FROM users").is_none());
        assert!(
            verdict(
                &rules,
                "SELECT e.id FROM users u JOIN events e ON u.id = e.uid WHERE u.id = 1"
            )
            .is_none()
        );
        assert!(verdict(&rules, "DELETE FROM events").is_some());
        assert!(verdict(&rules, "UPDATE events SET x = 1").is_some());
        assert!(verdict(&rules, "UPDATE events SET x = 1 WHERE id = 3").is_none());

        let rules = one(Condition::NoLimit(true));
        assert!(verdict(&rules, "SELECT id FROM t").is_some());
        assert!(verdict(&rules, "SELECT id FROM t LIMIT 10").is_none());
        assert!(verdict(&rules, "SELECT id FROM t FETCH FIRST 5 ROWS ONLY").is_none());
        assert!(verdict(&rules, "SELECT id FROM (SELECT id FROM t LIMIT 3) s").is_some());
        assert!(verdict(&rules, "INSERT INTO t VALUES (1)").is_none());

        let rules = one(Condition::MinJoins(2));
        assert!(
            verdict(
                &rules,
                "SELECT 1 FROM a JOIN b ON a.x = b.x JOIN c ON c.x = b.x"
            )
            .is_some()
        );
        assert!(verdict(&rules, "SELECT 1 FROM a, b WHERE a.x = b.x").is_none());
        assert!(verdict(&rules, "SELECT 1 FROM a, b, c").is_some());
    }

    #[test]
    fn session_conditions_and_patterns() {
        let rules = RuleSet::new(vec![rule(
            "bi",
            Action::Log,
            vec![
                Condition::Users(vec![Glob::new("tableau_*")]),
                Condition::Applications(vec![Glob::new("Tableau*")]),
                Condition::Databases(vec![Glob::new("dwh")]),
                Condition::ClientAddrs(vec!["10.0.0.0/8".parse().unwrap()]),
            ],
        )]);
        let mut s = SESSION;
        assert_eq!(verdict_as(&rules, "SELECT 1", &s), None, "no address");
        s.client_addr = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            verdict_as(&rules, "SELECT 1", &s).as_deref(),
            Some("bi:log")
        );
        assert_eq!(
            verdict_as(&rules, "SELEC garbage", &s).as_deref(),
            Some("bi:log")
        );
        s.user = "alice";
        assert_eq!(verdict_as(&rules, "SELECT 1", &s), None);

        let rules = one(Condition::Pattern(Pattern::new(
            Regex::new(r"(?i)\bpg_sleep\b").unwrap(),
        )));
        assert!(verdict(&rules, "SELECT PG_SLEEP(10)").is_some());
        assert!(verdict(&rules, "SELECT 1 /* pg_sleep */").is_none());
        assert!(verdict(&rules, "SELECT 1 -- pg_sleep").is_none());
        assert!(
            verdict(&rules, "SELEC pg_sleep(").is_some(),
            "text conditions apply to unparsed text"
        );
    }

    #[test]
    fn patterns_are_matched_together_with_the_same_verdicts() {
        let pattern = |re: &str| Condition::Pattern(Pattern::new(Regex::new(re).unwrap()));
        let rules = RuleSet::new(vec![
            rule("sleep", Action::Reject, vec![pattern(r"(?i)\bpg_sleep\b")]),
            rule(
                "sleep-for-bi",
                Action::Log,
                vec![
                    pattern(r"(?i)\bpg_sleep\b"),
                    Condition::Users(vec![Glob::new("bi")]),
                ],
            ),
            rule("secret", Action::Log, vec![pattern("secret_[0-9]+")]),
        ]);
        assert!(rules.patterns.is_some());
        assert_eq!(
            verdict(&rules, "SELECT pg_sleep(1)").as_deref(),
            Some("sleep:reject")
        );
        assert_eq!(
            verdict(&rules, "SELECT * FROM secret_42").as_deref(),
            Some("secret:log")
        );
        assert_eq!(
            verdict(&rules, "SELECT * FROM secret_x /* pg_sleep */"),
            None
        );
    }

    #[test]
    fn shape_conditions_do_not_hold_on_unparsed_text() {
        let rules = one(Condition::SelectStar(false));
        assert_eq!(verdict(&rules, "SELEC * FRM t"), None);
        assert!(verdict(&rules, "SELECT id FROM t").is_some());
    }

    #[test]
    fn tables_and_statement_kinds_resist_evasion() {
        let rules = RuleSet::new(vec![rule(
            "no-deletes",
            Action::Reject,
            vec![
                Condition::Statement(vec![StatementKind::Delete, StatementKind::Update]),
                Condition::Tables(vec![Glob::relation("public.orders")]),
            ],
        )]);
        for sql in [
            "DELETE FROM orders WHERE id = 1",
            "delete /* x */ from\n\"orders\" where id = 1",
            "DeLeTe FROM public.ORDERS",
            "SELECT 1; UPDATE orders SET a = 1",
            // Relation globs ignore case: a quoted "Orders" is caught too.
            "DELETE FROM \"Orders\"",
        ] {
            assert!(verdict(&rules, sql).is_some(), "{sql}");
        }
        for sql in ["DELETE FROM customers", "SELECT * FROM orders"] {
            assert!(verdict(&rules, sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn first_match_wins_and_reject_beats_other_statements() {
        let rules = RuleSet::new(vec![
            rule(
                "log-all",
                Action::Log,
                vec![Condition::Statement(vec![StatementKind::Select])],
            ),
            rule(
                "no-drop",
                Action::Reject,
                vec![Condition::Statement(vec![StatementKind::Ddl])],
            ),
            rule(
                "budget",
                Action::Cancel {
                    budget: Duration::from_secs(5),
                },
                vec![Condition::Statement(vec![StatementKind::Select])],
            ),
        ]);
        assert_eq!(verdict(&rules, "SELECT 1").as_deref(), Some("log-all:log"));
        assert_eq!(
            verdict(&rules, "SELECT 1; DROP TABLE t; SELECT 2").as_deref(),
            Some("no-drop:reject")
        );
    }

    #[test]
    fn fingerprint_condition_ignores_literals() {
        let class = classify("SELECT * FROM t WHERE id = 1", &CatalogPolicy::default());
        let rules = one(Condition::Fingerprint(class.fingerprint));
        assert!(verdict(&rules, "select * from t where id = 99").is_some());
        assert!(verdict(&rules, "SELECT 1; select * from t where id = 99").is_some());
        assert!(verdict(&rules, "select * from t where id > 99").is_none());
    }

    #[test]
    fn explain_reports_each_condition() {
        let rules = RuleSet::new(vec![
            rule(
                "no-cartesian",
                Action::Reject,
                vec![
                    Condition::Users(vec![Glob::new("bob")]),
                    Condition::CrossJoin(true),
                ],
            ),
            rule("star", Action::Log, vec![Condition::SelectStar(true)]),
        ]);
        let sql = "SELECT * FROM a, b";
        let class = classify(sql, &CatalogPolicy::default());
        let text = rules.explain(&class, &SESSION, sql);
        assert!(
            text.contains("rule \"no-cartesian\" (reject): does not match"),
            "{text}"
        );
        assert!(text.contains("users = [\"bob\"]"), "{text}");
        assert!(text.contains("fails: user \"tableau_etl\""), "{text}");
        assert!(text.contains("cross_join = true"), "{text}");
        assert!(text.contains("holds: cross join: true"), "{text}");
        assert!(text.contains("rule \"star\" (log): MATCHES"), "{text}");
        assert!(text.contains("verdict: log by rule \"star\""), "{text}");
    }
}

/// Cost of rules per query (docs/benchmarks.md). Run in release:
/// `cargo test --release --lib rule_evaluation_cost -- --ignored --nocapture`
#[cfg(test)]
mod bench {
    use super::*;
    use crate::classify::{CatalogPolicy, ClassificationCache, classify};
    use std::time::Instant;

    /// 50 rules of every kind; none matches the workload, so every query is
    /// checked against all of them (the worst case).
    fn fifty_rules() -> RuleSet {
        let mut rules = Vec::new();
        for i in 0..50 {
            let conditions = match i % 5 {
                0 => vec![Condition::Pattern(Pattern::new(
                    Regex::new(&format!(r"(?i)\bforbidden_fn_{i}\b")).unwrap(),
                ))],
                1 => vec![
                    Condition::Tables(vec![Glob::relation(&format!("archive_{i}.*"))]),
                    Condition::NoWhere(true),
                ],
                2 => vec![
                    Condition::Users(vec![Glob::new(&format!("etl_{i}_*"))]),
                    Condition::SelectStar(true),
                ],
                3 => vec![
                    Condition::Statement(vec![StatementKind::Delete, StatementKind::Ddl]),
                    Condition::Tables(vec![Glob::relation("public.*")]),
                ],
                _ => vec![Condition::Fingerprint(Fingerprint(i as u64))],
            };
            rules.push(Rule {
                name: format!("rule-{i}").into(),
                conditions,
                action: Action::Reject,
                message: "no".into(),
            });
        }
        RuleSet::new(rules)
    }

    const WORKLOAD: &[&str] = &[
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.day >= '2024-01-01' AND c.region IN ('eu', 'us', 'ap') ORDER BY o.total DESC LIMIT 100",
        "WITH recent AS (SELECT customer_id, sum(total) AS spent FROM orders WHERE day > now() - interval '30 days' GROUP BY 1) SELECT c.name, r.spent FROM recent r JOIN customers c ON c.id = r.customer_id /* dashboard 7 */ ORDER BY 2 DESC",
        "SELECT count(*) FROM events WHERE kind = 'click' AND ts BETWEEN $1 AND $2",
        "SELECT \"Region\", sum(amount) FROM sales.facts f, sales.dim_region r WHERE f.region_id = r.id GROUP BY 1",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 42",
    ];

    fn per_op(n: u32, f: impl FnMut()) -> f64 {
        let mut f = f;
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    }

    #[test]
    #[ignore = "a timing run; see docs/benchmarks.md"]
    fn rule_evaluation_cost() {
        let rules = fifty_rules();
        let session = SessionInfo {
            user: "analyst",
            application: "Tableau 2024.1",
            database: "dwh",
            client_addr: Some("10.1.2.3".parse().unwrap()),
        };
        let policy = CatalogPolicy::default();
        let cache = ClassificationCache::new(1000, policy.clone());
        let n = 20_000;
        println!(
            "query | classify µs | evaluate 50 rules µs | uncached (classify + evaluate) µs | cached (lookup + evaluate) µs"
        );
        for sql in WORKLOAD {
            let class = classify(sql, &policy);
            assert!(rules.evaluate(&class, &session, sql).is_none());
            let parse = per_op(n / 10, || {
                std::hint::black_box(classify(sql, &policy));
            });
            let evaluate = per_op(n, || {
                std::hint::black_box(rules.evaluate(&class, &session, sql));
            });
            let uncached = per_op(n / 10, || {
                let c = classify(sql, &policy);
                std::hint::black_box(rules.evaluate(&c, &session, sql));
            });
            cache.lookup(sql);
            let cached = per_op(n, || {
                let (c, _) = cache.lookup(sql);
                std::hint::black_box(rules.evaluate(&c, &session, sql));
            });
            println!(
                "{:.50} | {parse:.1} | {evaluate:.2} | {uncached:.1} | {cached:.2}",
                sql
            );
        }
    }
}
