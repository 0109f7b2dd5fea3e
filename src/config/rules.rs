//! The `[[rules]]`, `[limits]` and `[stats]` sections: bad-query rules,
//! compiled into a [`RuleSet`]; the global query budget; the size of the
//! statistics table. Every problem names its rule's key and line.

use std::time::Duration;

use toml::Spanned;

use super::Validator;
use super::raw::{RawLimits, RawRule, RawStats};
use crate::classify::rules::{Condition, Glob, Pattern};
use crate::classify::{Action, Fingerprint, Rule, RuleSet, StatementKind};

/// `[limits]`.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Every query is cancelled once it runs this long; `None`: no limit.
    pub max_query_duration: Option<Duration>,
}

/// `[stats]`.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Fingerprints kept; beyond, the least recently seen make room.
    pub max_fingerprints: usize,
}

impl Validator<'_> {
    pub(super) fn limits(&mut self, raw: RawLimits) -> Option<Limits> {
        let max_query_duration = match &raw.max_query_duration {
            Some(d) => Some(self.duration("limits.max_query_duration", d)?),
            None => None,
        };
        Some(Limits { max_query_duration })
    }

    pub(super) fn stats(&mut self, raw: RawStats) -> Option<Stats> {
        let max_fingerprints = self.count(
            "stats.max_fingerprints",
            &raw.max_fingerprints,
            1,
            10_000_000,
        )?;
        Some(Stats { max_fingerprints })
    }

    pub(super) fn rules(&mut self, raw: Vec<Spanned<RawRule>>) -> Option<RuleSet> {
        let mut rules = Vec::new();
        let mut ok = true;
        let mut names: Vec<String> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let key = format!("rules[{i}]");
            let r = spanned.get_ref();
            match &r.name {
                Some(name) if names.contains(name.get_ref()) => {
                    self.problem(
                        name.span(),
                        &format!("{key}.name"),
                        format!(
                            "{:?} is used by an earlier rule; rule names must be unique",
                            name.get_ref()
                        ),
                    );
                    ok = false;
                }
                Some(name) => names.push(name.get_ref().clone()),
                None => {}
            }
            match self.rule(&key, spanned.span(), r) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then(|| RuleSet::new(rules))
    }

    pub(super) fn globs(
        &mut self,
        key: &str,
        values: &[Spanned<String>],
        relation: bool,
    ) -> Option<Vec<Glob>> {
        let mut out = Vec::new();
        for (j, v) in values.iter().enumerate() {
            if v.get_ref().is_empty() {
                self.problem(
                    v.span(),
                    &format!("{key}[{j}]"),
                    "an empty pattern matches nothing",
                );
                return None;
            }
            out.push(if relation {
                Glob::relation(v.get_ref())
            } else {
                Glob::new(v.get_ref())
            });
        }
        Some(out)
    }

    fn rule(&mut self, key: &str, span: std::ops::Range<usize>, r: &RawRule) -> Option<Rule> {
        let before = self.problems.len();
        let name = match &r.name {
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
            Some(n) => {
                self.problem(n.span(), &format!("{key}.name"), "must not be empty");
                String::new()
            }
            None => {
                self.problem(span.clone(), &format!("{key}.name"), "missing: every rule needs a unique name (it appears in errors, logs and SHOW RULES)");
                String::new()
            }
        };
        let mut conditions = Vec::new();
        for (field, values) in [
            ("users", &r.users),
            ("applications", &r.applications),
            ("databases", &r.databases),
            ("tables", &r.tables),
        ] {
            let Some(values) = values else { continue };
            let k = format!("{key}.{field}");
            if let Some(g) = self.globs(&k, values, field == "tables") {
                conditions.push(match field {
                    "users" => Condition::Users(g),
                    "applications" => Condition::Applications(g),
                    "databases" => Condition::Databases(g),
                    _ => Condition::Tables(g),
                });
            }
        }
        if let Some(addrs) = &r.client_addrs {
            let mut nets = Vec::new();
            for (j, a) in addrs.iter().enumerate() {
                let text = a.get_ref();
                let parsed = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(n) => nets.push(n),
                    Err(_) => self.problem(
                        a.span(),
                        &format!("{key}.client_addrs[{j}]"),
                        format!("{text:?} is not an address or a CIDR block, e.g. \"10.0.0.0/8\""),
                    ),
                }
            }
            conditions.push(Condition::ClientAddrs(nets));
        }
        if let Some(p) = &r.pattern {
            match regex::Regex::new(p.get_ref()) {
                Ok(re) => conditions.push(Condition::Pattern(Pattern::new(re))),
                Err(e) => {
                    let why = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    self.problem(
                        p.span(),
                        &format!("{key}.pattern"),
                        format!("not a valid regular expression: {why}"),
                    );
                }
            }
        }
        if let Some(f) = &r.fingerprint {
            match f.get_ref().parse::<Fingerprint>() {
                Ok(fp) => conditions.push(Condition::Fingerprint(fp)),
                Err(e) => self.problem(f.span(), &format!("{key}.fingerprint"), e),
            }
        }
        if let Some(kinds) = &r.statement {
            let mut out = Vec::new();
            for (j, k) in kinds.iter().enumerate() {
                match StatementKind::from_name(k.get_ref()) {
                    Some(kind) => out.push(kind),
                    None => {
                        let names: Vec<&str> =
                            StatementKind::ALL.iter().map(|k| k.name()).collect();
                        self.problem(
                            k.span(),
                            &format!("{key}.statement[{j}]"),
                            format!(
                                "{:?} is not a statement kind; use {}",
                                k.get_ref(),
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
            conditions.push(Condition::Statement(out));
        }
        for (flag, value) in [
            ("cross_join", r.cross_join),
            ("select_star", r.select_star),
            ("no_where", r.no_where),
            ("no_limit", r.no_limit),
        ] {
            let Some(v) = value else { continue };
            conditions.push(match flag {
                "cross_join" => Condition::CrossJoin(v),
                "select_star" => Condition::SelectStar(v),
                "no_where" => Condition::NoWhere(v),
                _ => Condition::NoLimit(v),
            });
        }
        if let Some(n) = &r.min_joins
            && let Some(n) = self.count(&format!("{key}.min_joins"), n, 1, 1000)
        {
            conditions.push(Condition::MinJoins(n));
        }
        let action = match &r.action {
            None => {
                self.problem(
                    span.clone(),
                    &format!("{key}.action"),
                    "missing: write action = \"reject\", \"cancel\" or \"log\"",
                );
                None
            }
            Some(a) => match a.get_ref().as_str() {
                "reject" | "log" if r.max_duration.is_some() => {
                    let d = r.max_duration.as_ref().expect("checked");
                    self.problem(
                        d.span(),
                        &format!("{key}.max_duration"),
                        format!("applies only to action = \"cancel\", not {:?}", a.get_ref()),
                    );
                    None
                }
                "reject" => Some(Action::Reject),
                "log" => Some(Action::Log),
                "cancel" => match &r.max_duration {
                    Some(d) => self
                        .duration(&format!("{key}.max_duration"), d)
                        .map(|budget| Action::Cancel { budget }),
                    None => {
                        self.problem(a.span(), &format!("{key}.max_duration"), "missing: action = \"cancel\" needs the budget, e.g. max_duration = \"5m\"");
                        None
                    }
                },
                other => {
                    self.problem(
                        a.span(),
                        &format!("{key}.action"),
                        format!("{other:?} is not one of \"reject\", \"cancel\", \"log\""),
                    );
                    None
                }
            },
        };
        if conditions.is_empty() && self.problems.len() == before {
            self.warning(span, key, "has no condition: it matches every query");
        }
        let message = r
            .message
            .as_ref()
            .map(|m| m.get_ref().clone())
            .unwrap_or_default();
        if self.problems.len() != before {
            return None;
        }
        Some(Rule {
            name: name.into(),
            conditions,
            action: action?,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[warehouse]\nnodes = [\"127.0.0.1:5441\"]\n";

    #[test]
    fn rules_compile_in_order() {
        let src = format!(
            "{BASE}[limits]\nmax_query_duration = \"10m\"\n\n[[rules]]\nname = \"no-cartesian\"\ncross_join = true\naction = \"reject\"\nmessage = \"no\"\n\n[[rules]]\nname = \"slow\"\nusers = [\"tableau_*\"]\nclient_addrs = [\"10.0.0.0/8\", \"192.168.1.7\"]\npattern = \"(?i)pg_sleep\"\nstatement = [\"select\"]\nmin_joins = 3\naction = \"cancel\"\nmax_duration = \"5s\"\n"
        );
        let c = Config::parse(&src, "sluice.toml", Path::new(".")).unwrap();
        let names: Vec<&str> = c.rules.rules().iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["no-cartesian", "slow"]);
        assert_eq!(c.rules.rules()[1].conditions.len(), 5);
        assert_eq!(
            c.limits.max_query_duration,
            Some(std::time::Duration::from_secs(600))
        );
    }

    #[test]
    fn rule_problems_name_line_and_key() {
        let src = format!(
            "{BASE}[[rules]]\nname = \"a\"\npattern = \"(unclosed\"\naction = \"reject\"\n\n[[rules]]\nname = \"a\"\naction = \"cancel\"\nstatement = [\"drop\"]\nfingerprint = \"xyz\"\n\n[[rules]]\naction = \"reject\"\nmax_duration = \"5m\"\nclient_addrs = [\"10.0.0.0/33\"]\nselect_starr = true\n"
        );
        let err = Config::parse(&src, "sluice.toml", Path::new(".")).unwrap_err();
        let text = err.to_string();
        // Unknown keys stop at the syntax stage; the rest is checked without them.
        assert!(text.contains("sluice.toml:18:"), "{text}");
        assert!(text.contains("select_starr"), "{text}");
        let src = src.replace("select_starr = true\n", "");
        let text = Config::parse(&src, "sluice.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        for needle in [
            "sluice.toml:5: rules[0].pattern: not a valid regular expression",
            "sluice.toml:9: rules[1].name: \"a\" is used by an earlier rule",
            "sluice.toml:10: rules[1].max_duration: missing",
            "sluice.toml:11: rules[1].statement[0]: \"drop\" is not a statement kind",
            "sluice.toml:12: rules[1].fingerprint:",
            "rules[2].name: missing",
            "sluice.toml:16: rules[2].max_duration: applies only to action = \"cancel\"",
            "sluice.toml:17: rules[2].client_addrs[0]: \"10.0.0.0/33\" is not an address",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
    }
}
