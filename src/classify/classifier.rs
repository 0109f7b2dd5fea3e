//! Parsing a query and deciding where it runs.
//!
//! A statement is a *catalog lookup* when it only reads and every relation it
//! references lies in a catalog schema. Unqualified names resolve as the
//! server resolves them: pg_catalog is searched first, so `pg_class` is
//! `pg_catalog.pg_class`, while an unqualified `tables` is a user table.
//! Everything else, including text that does not parse, runs on the node:
//! when in doubt, the warehouse answers.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, FunctionArguments, JoinOperator, ObjectName, ObjectNamePart,
    Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Value, Visit,
    Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::fingerprint::{Fingerprint, fingerprint, text_fingerprint};
use super::pg_catalog::PG_CATALOG_RELATIONS;
use super::rules::RuleMemo;

/// Where a query runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The catalog copy answers.
    Catalog,
    /// The session's warehouse node answers.
    Node,
}

/// The kind of a statement, as rules and routing need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StatementKind {
    #[default]
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    /// CREATE, ALTER, DROP, COMMENT, GRANT, REVOKE, ...: changes what the catalog shows.
    Ddl,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...
    Transaction,
    /// SET, RESET, SHOW, DISCARD.
    Session,
    Other,
}

impl StatementKind {
    pub const ALL: [StatementKind; 10] = [
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Merge,
        StatementKind::Copy,
        StatementKind::Ddl,
        StatementKind::Transaction,
        StatementKind::Session,
        StatementKind::Other,
    ];

    /// The kind a rule's `statement` list names, e.g. "delete".
    pub fn from_name(name: &str) -> Option<StatementKind> {
        StatementKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Copy => "copy",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Session => "session",
            StatementKind::Other => "other",
        }
    }
}

/// Which schemas make up the catalog, and which functions a relation-less
/// query may call and still be answered by the catalog copy.
#[derive(Clone, Debug)]
pub struct CatalogPolicy {
    pub schemas: Vec<String>,
    pub allowed_functions: Vec<String>,
}

impl Default for CatalogPolicy {
    fn default() -> Self {
        CatalogPolicy {
            schemas: vec![
                "pg_catalog".into(),
                "information_schema".into(),
                "v_catalog".into(),
            ],
            allowed_functions: Vec::new(),
        }
    }
}

/// What one parse of a query text found, over all its statements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub kinds: Vec<StatementKind>,
    /// Relations read, resolved to `schema.name` (unqualified user relations stay bare).
    pub relations: BTreeSet<String>,
    /// Functions called, lowercased, qualified as written.
    pub functions: BTreeSet<String>,
    /// A query locks rows (FOR UPDATE/SHARE) or creates a table (SELECT INTO).
    pub writes_from_select: bool,
    /// A statement changes what catalog lookups show: DDL other than
    /// creating a temporary table (Tableau makes one per extract; the copy
    /// never holds them, so they need no refresh), or SELECT INTO.
    pub changes_catalog: bool,
    /// String literals compared with a column called `name` (`name = 'x'`),
    /// to tell which pg_settings rows a query reads.
    pub names_compared: BTreeSet<String>,
    /// Each statement on its own, in order: what rules look at.
    pub statements: Vec<StatementFacts>,
}

/// The shape of one statement, as rules need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatementFacts {
    pub kind: StatementKind,
    /// Relations it references, resolved as in [`Facts::relations`].
    pub relations: BTreeSet<String>,
    /// A `*` or `t.*` projection over a FROM list, anywhere (CTEs and
    /// subqueries too); `count(*)` is not a projection of `*`.
    pub select_star: bool,
    /// A CROSS JOIN, or a comma join whose WHERE links not all of its tables.
    pub cross_join: bool,
    /// Relations read by a SELECT, UPDATE or DELETE that has no WHERE clause.
    pub tables_without_where: BTreeSet<String>,
    /// For a query: whether its outermost level has LIMIT or FETCH FIRST.
    /// `None` for other statements.
    pub outer_limit: Option<bool>,
    /// Joins, explicit and comma joins, over the whole statement.
    pub joins: usize,
    pub fingerprint: Fingerprint,
}

/// The decision for one query text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    /// Why, in a phrase (for `sluice explain` and logs).
    pub reason: String,
    /// `None` when the text did not parse.
    pub facts: Option<Facts>,
    pub parse_error: Option<String>,
    /// When the text did not parse: the relations a token scan found in it
    /// ([`super::scan`]), for rules' `tables` conditions. Empty otherwise.
    pub scanned_relations: BTreeSet<String>,
    /// The whole text's fingerprint: its statements' (one statement: that
    /// statement's), or the masked text's when it does not parse.
    pub fingerprint: Fingerprint,
    /// Which rules this classification can meet (see [`RuleMemo`]).
    pub rule_memo: RuleMemo,
    /// The text was not parsed, and its first word says it changes the
    /// catalog (Vertica's CREATE PROJECTION, DDL sqlparser does not know).
    pub unparsed_ddl: bool,
}

impl Facts {
    /// The fingerprint of all statements together.
    pub fn fingerprint(&self) -> Fingerprint {
        let parts: Vec<Fingerprint> = self.statements.iter().map(|s| s.fingerprint).collect();
        Fingerprint::combine(&parts)
    }
}

impl Classification {
    /// The query changes what catalog lookups would show: DDL, `SELECT
    /// INTO` (and, with it, `FOR UPDATE`, which costs only a refresh that
    /// finds nothing), or unparsed text that starts like DDL.
    pub fn is_ddl(&self) -> bool {
        match &self.facts {
            Some(f) => f.changes_catalog,
            None => self.unparsed_ddl,
        }
    }

    fn node(reason: impl Into<String>, facts: Option<Facts>) -> Classification {
        Classification::new(Route::Node, reason, facts)
    }

    fn new(route: Route, reason: impl Into<String>, facts: Option<Facts>) -> Classification {
        let fingerprint = facts.as_ref().map(|f| f.fingerprint()).unwrap_or_default();
        Classification {
            route,
            reason: reason.into(),
            facts,
            parse_error: None,
            rule_memo: Default::default(),
            scanned_relations: BTreeSet::new(),
            fingerprint,
            unparsed_ddl: false,
        }
    }
}

/// Relations of pg_catalog that describe the node's live state or hold data,
/// not the schema: only the node can answer them.
fn is_live_state(name: &str) -> bool {
    // pg_statistic_ext and pg_statistic_ext_data differ: the first is
    // schema (CREATE STATISTICS), the second the statistics themselves.
    name.starts_with("pg_stat_")
        || name.starts_with("pg_statio_")
        || matches!(
            name,
            "pg_locks"
                | "pg_statistic"
                | "pg_statistic_ext_data"
                | "pg_stats"
                | "pg_stats_ext"
                | "pg_stats_ext_exprs"
                | "pg_settings"
                | "pg_file_settings"
                | "pg_cursors"
                | "pg_prepared_statements"
                | "pg_prepared_xacts"
                | "pg_backend_memory_contexts"
                | "pg_shmem_allocations"
                | "pg_replication_slots"
                | "pg_replication_origin_status"
                | "pg_hba_file_rules"
                | "pg_ident_file_mappings"
                | "pg_largeobject"
                | "pg_sequences"
                | "pg_config"
        )
}

/// Settings fixed when PostgreSQL was built or initialised ("internal"
/// context): the catalog copy reports the same values as the node.
const CONSTANT_SETTINGS: &[&str] = &[
    "block_size",
    "data_checksums",
    "integer_datetimes",
    "max_function_args",
    "max_identifier_length",
    "max_index_keys",
    "segment_size",
    "server_encoding",
    "server_version",
    "server_version_num",
    "wal_block_size",
    "wal_segment_size",
];

/// Functions that act on or report the node's state; a query calling one runs on the node.
fn is_node_function(name: &str) -> bool {
    let base = name.rsplit('.').next().unwrap_or(name);
    matches!(
        base,
        "nextval"
            | "setval"
            | "currval"
            | "lastval"
            | "set_config"
            | "current_setting"
            | "pg_notify"
            | "pg_reload_conf"
            | "pg_backend_pid"
            | "inet_server_port"
            | "inet_server_addr"
            | "inet_client_addr"
            | "inet_client_port"
            | "pg_postmaster_start_time"
            | "pg_conf_load_time"
            | "pg_is_in_recovery"
            | "txid_current"
            | "pg_current_xact_id"
            | "pg_relation_size"
            | "pg_total_relation_size"
            | "pg_table_size"
            | "pg_indexes_size"
            | "pg_database_size"
    ) || base.starts_with("pg_sleep")
        || base.starts_with("pg_advisory")
        || base.starts_with("pg_try_advisory")
        || base.starts_with("pg_terminate")
        || base.starts_with("pg_cancel")
        || base.starts_with("pg_stat_")
        || base.starts_with("lo_")
        || base.starts_with("dblink")
        || base.starts_with("pg_read_")
}

/// Parses `sql` and decides where it runs.
pub fn classify(sql: &str, policy: &CatalogPolicy) -> Classification {
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            // Vertica-only syntax, typically: the node answers, and a
            // token scan still tells rules which relations it names.
            return Classification {
                route: Route::Node,
                reason: "the text does not parse; the node answers".into(),
                facts: None,
                parse_error: Some(e.to_string()),
                rule_memo: Default::default(),
                scanned_relations: super::scan::scanned_relations(sql),
                fingerprint: text_fingerprint(sql),
                unparsed_ddl: starts_like_ddl(sql),
            };
        }
    };
    let facts = facts_of(&statements);
    decide(facts, policy)
}

/// Whether the first word of `sql` (after comments) begins a statement
/// that changes the catalog: for text that was not parsed, where a wrong
/// "yes" costs a catalog refresh that finds nothing, and a wrong "no" a
/// stale lookup until the change probe notices.
pub fn starts_like_ddl(sql: &str) -> bool {
    let mut first = None;
    crate::lex::each_piece(sql, |kind, range| {
        if first.is_none()
            && !matches!(
                kind,
                crate::lex::Kind::Comment | crate::lex::Kind::Whitespace
            )
        {
            first = Some(range);
        }
    });
    let Some(range) = first else { return false };
    let word: String = sql[range]
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    [
        "CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "TRUNCATE", "RENAME",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

fn decide(facts: Facts, policy: &CatalogPolicy) -> Classification {
    if facts.kinds.is_empty() {
        return Classification::node("an empty query", Some(facts));
    }
    if let Some(kind) = facts.kinds.iter().find(|k| **k != StatementKind::Select) {
        return Classification::node(format!("a {} statement", kind.name()), Some(facts));
    }
    if facts.writes_from_select {
        return Classification::node("the query locks rows or creates a table", Some(facts));
    }
    if let Some(f) = facts.functions.iter().find(|f| is_node_function(f)) {
        return Classification::node(
            format!("calls {f}(), which reports or changes the node's state"),
            Some(facts),
        );
    }
    if facts.relations.is_empty() {
        let allowed = |f: &String| {
            policy
                .allowed_functions
                .iter()
                .any(|a| a.eq_ignore_ascii_case(f))
        };
        if !facts.functions.is_empty() && facts.functions.iter().all(allowed) {
            return Classification::new(
                Route::Catalog,
                "references no relation and calls only allowed functions",
                Some(facts),
            );
        }
        return Classification::node("references no relation", Some(facts));
    }
    for relation in &facts.relations {
        let Some((schema, name)) = relation.split_once('.') else {
            return Classification::node(format!("reads {relation}, a user relation"), Some(facts));
        };
        if !policy.schemas.iter().any(|s| s == schema) {
            return Classification::node(
                format!("reads {relation}, outside the catalog schemas"),
                Some(facts),
            );
        }
        let constant_settings = name == "pg_settings"
            && !facts.names_compared.is_empty()
            && facts
                .names_compared
                .iter()
                .all(|n| CONSTANT_SETTINGS.contains(&n.as_str()));
        if schema == "pg_catalog" && is_live_state(name) && !constant_settings {
            return Classification::node(
                format!("reads {relation}, the node's live state"),
                Some(facts),
            );
        }
    }
    let relations: Vec<&str> = facts.relations.iter().map(String::as_str).collect();
    Classification::new(
        Route::Catalog,
        format!("reads only catalog relations ({})", relations.join(", ")),
        Some(facts),
    )
}

fn facts_of(statements: &[Statement]) -> Facts {
    let mut facts = Facts::default();
    for statement in statements {
        let mut collector = Collector::default();
        let kind = kind_of(statement);
        collector.kinds.push(kind);
        let temporary = matches!(statement, Statement::CreateTable(t) if t.temporary);
        facts.changes_catalog |= kind == StatementKind::Ddl && !temporary;
        let _ = statement.visit(&mut collector);
        collector.statement_end(statement);
        let ctes = std::mem::take(&mut collector.ctes);
        let resolve_all = |raw: Vec<Vec<String>>| -> BTreeSet<String> {
            raw.into_iter()
                .filter(|r| r.len() != 1 || !ctes.contains(&r[0]))
                .map(|r| resolve(&r))
                .collect()
        };
        let relations = resolve_all(collector.raw_relations);
        let one = StatementFacts {
            kind: collector.kinds[0],
            relations: relations.clone(),
            select_star: collector.select_star,
            cross_join: collector.cross_join,
            tables_without_where: resolve_all(collector.raw_without_where),
            outer_limit: match statement {
                Statement::Query(q) => Some(q.limit_clause.is_some() || q.fetch.is_some()),
                _ => None,
            },
            joins: collector.joins,
            fingerprint: fingerprint(statement).0,
        };
        for kind in collector.kinds {
            if !facts.kinds.contains(&kind) || kind == one.kind {
                facts.kinds.push(kind);
            }
        }
        facts.relations.extend(relations);
        facts.functions.extend(collector.functions);
        facts.writes_from_select |= collector.writes_from_select;
        facts.changes_catalog |= collector.writes_from_select;
        facts.names_compared.extend(collector.names_compared);
        facts.statements.push(one);
    }
    facts
}

/// `schema.name` for a qualified or pg_catalog relation, the bare name otherwise.
pub(super) fn resolve(parts: &[String]) -> String {
    match parts {
        [name] if PG_CATALOG_RELATIONS.contains(&name.as_str()) => format!("pg_catalog.{name}"),
        [name] => name.clone(),
        [.., schema, name] => format!("{schema}.{name}"),
        [] => String::new(),
    }
}

fn kind_of(statement: &Statement) -> StatementKind {
    match statement {
        Statement::Query(_) => StatementKind::Select,
        Statement::Insert(_) => StatementKind::Insert,
        Statement::Update { .. } => StatementKind::Update,
        Statement::Delete(_) => StatementKind::Delete,
        Statement::Merge { .. } => StatementKind::Merge,
        Statement::Copy { .. } => StatementKind::Copy,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => StatementKind::Transaction,
        Statement::ShowVariable { .. } | Statement::Discard { .. } => StatementKind::Session,
        other => {
            // The rest are told apart by their leading keyword; printing is
            // cheap next to parsing, and only non-queries get here.
            let text = other.to_string();
            let first = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match first.as_str() {
                "CREATE" | "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "TRUNCATE"
                | "RENAME" => StatementKind::Ddl,
                "SET" | "RESET" | "SHOW" | "DISCARD" => StatementKind::Session,
                "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT"
                | "RELEASE" => StatementKind::Transaction,
                _ => StatementKind::Other,
            }
        }
    }
}

/// One pass over one statement's AST, collecting what routing and rules need.
#[derive(Default)]
struct Collector {
    /// The statement's own kind first, then those of data-modifying CTEs.
    kinds: Vec<StatementKind>,
    functions: BTreeSet<String>,
    writes_from_select: bool,
    names_compared: BTreeSet<String>,
    raw_relations: Vec<Vec<String>>,
    raw_without_where: Vec<Vec<String>>,
    ctes: BTreeSet<String>,
    select_star: bool,
    cross_join: bool,
    joins: usize,
    visited_statement: bool,
}

impl Collector {
    /// What the visitor does not see as a SELECT: UPDATE and DELETE without WHERE.
    fn statement_end(&mut self, statement: &Statement) {
        match statement {
            Statement::Update(u) if u.selection.is_none() => {
                tables_of(std::slice::from_ref(&u.table), &mut self.raw_without_where);
            }
            Statement::Delete(d) if d.selection.is_none() => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
                tables_of(from, &mut self.raw_without_where);
            }
            _ => {}
        }
    }
}

/// The plain tables of a FROM list, joins included.
fn tables_of(from: &[TableWithJoins], out: &mut Vec<Vec<String>>) {
    for t in from {
        for factor in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table {
                name, args: None, ..
            } = factor
            {
                out.push(name_parts(name));
            }
        }
    }
}

/// The names a FROM item's columns are qualified with: its alias, or its
/// table's bare name (both lower-cased).
fn qualifiers(factor: &TableFactor) -> Vec<String> {
    match factor {
        TableFactor::Table { alias: Some(a), .. }
        | TableFactor::Derived { alias: Some(a), .. }
        | TableFactor::Function { alias: Some(a), .. } => vec![a.name.value.to_lowercase()],
        TableFactor::Table { name, .. } => name_parts(name).last().cloned().into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A comma join (`FROM a, b`) is a cross join unless the WHERE clause
/// compares columns of its items so that all of them are linked. Columns must
/// be qualified to count: `WHERE a.id = b.a_id` links, `WHERE a_id = id`
/// cannot be told apart without the schema, so it does not.
fn comma_join_unlinked(from: &[TableWithJoins], selection: Option<&Expr>) -> bool {
    if from.len() < 2 {
        return false;
    }
    let Some(selection) = selection else {
        return true;
    };
    let groups: Vec<Vec<String>> = from
        .iter()
        .map(|t| {
            std::iter::once(&t.relation)
                .chain(t.joins.iter().map(|j| &j.relation))
                .flat_map(qualifiers)
                .collect()
        })
        .collect();
    let group_of = |q: &str| groups.iter().position(|g| g.iter().any(|n| n == q));
    // Union-find over the FROM items.
    let mut parent: Vec<usize> = (0..groups.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let _ = sqlparser::ast::visit_expressions(selection, |e| {
        if let Expr::BinaryOp { left, op, right } = e
            && !matches!(op, BinaryOperator::And | BinaryOperator::Or)
        {
            let mut sides = [Vec::new(), Vec::new()];
            for (side, expr) in sides.iter_mut().zip([left, right]) {
                let _ = sqlparser::ast::visit_expressions(expr.as_ref(), |inner| {
                    if let Expr::CompoundIdentifier(parts) = inner
                        && parts.len() >= 2
                        && let Some(g) = group_of(&parts[parts.len() - 2].value.to_lowercase())
                    {
                        side.push(g);
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
            for a in &sides[0] {
                for b in &sides[1] {
                    let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
                    parent[ra] = rb;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let first = root(&mut parent, 0);
    (1..groups.len()).any(|i| root(&mut parent, i) != first)
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            // Unquoted identifiers fold to lower case, as PostgreSQL folds them.
            ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
            ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
            other => other.to_string().to_lowercase(),
        })
        .collect()
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if !query.locks.is_empty() || selects_into(&query.body) {
            self.writes_from_select = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        let star = select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        self.select_star |= star && !select.from.is_empty();
        self.joins += select.from.len().saturating_sub(1)
            + select.from.iter().map(|t| t.joins.len()).sum::<usize>();
        self.cross_join |= select.from.iter().any(|t| {
            t.joins
                .iter()
                .any(|j| matches!(j.join_operator, JoinOperator::CrossJoin(_)))
        }) || comma_join_unlinked(&select.from, select.selection.as_ref());
        if select.selection.is_none() {
            tables_of(&select.from, &mut self.raw_without_where);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.functions.insert(name_parts(name).join("."));
            }
            TableFactor::Table {
                name, args: None, ..
            } => self.raw_relations.push(name_parts(name)),
            TableFactor::Function { name, .. } => {
                self.functions.insert(name_parts(name).join("."));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        // Data-modifying CTEs: WITH d AS (DELETE ... RETURNING *) SELECT ...
        // The statement itself is visited first; its kind is already in.
        if !matches!(statement, Statement::Query(_)) && self.visited_statement {
            let kind = kind_of(statement);
            if kind != StatementKind::Select && !self.kinds.contains(&kind) {
                self.kinds.push(kind);
            }
        }
        self.visited_statement = true;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = expr
            && let (Some(column), Some(text)) = (column_name(left), string_literal(right))
            && column == "name"
        {
            self.names_compared.insert(text);
        }
        if let Expr::Function(f) = expr {
            let name = name_parts(&f.name).join(".");
            // CURRENT_USER, CURRENT_SCHEMA and friends parse as argument-less functions.
            let _ = matches!(f.args, FunctionArguments::None);
            self.functions.insert(name);
        }
        ControlFlow::Continue(())
    }
}

/// The last part of a column reference, lowercased.
fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(i.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn selects_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => selects_into(&q.body),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(sql: &str) -> Route {
        classify(sql, &CatalogPolicy::default()).route
    }

    #[test]
    fn catalog_lookups_go_to_the_catalog_copy() {
        for sql in [
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r'",
            "select * from PG_CLASS c join pg_namespace n on n.oid = c.relnamespace",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            "SELECT table_name FROM v_catalog.tables",
            "WITH t AS (SELECT oid FROM pg_type) SELECT count(*) FROM t",
            "SELECT n.nspname FROM pg_namespace n UNION ALL SELECT schema_name FROM information_schema.schemata",
            "SELECT c.relname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_class c, pg_attribute a WHERE a.attrelid = c.oid AND c.oid = $1",
            "SELECT * FROM (SELECT typname FROM pg_type) sub WHERE typname IN (SELECT typname FROM pg_catalog.pg_type)",
            "SELECT \"relname\" FROM \"pg_catalog\".\"pg_class\"",
            "SELECT stxname FROM pg_catalog.pg_statistic_ext WHERE stxrelid = '16390'",
            "SELECT setting FROM pg_catalog.pg_settings WHERE name='max_index_keys'",
        ] {
            assert_eq!(route(sql), Route::Catalog, "{sql}");
        }
    }

    #[test]
    fn everything_else_stays_on_the_node() {
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM tables",
            "SELECT c.relname FROM pg_class c JOIN public.t ON true",
            "SELECT 1",
            "SELECT version()",
            "SELECT current_user",
            "INSERT INTO t VALUES (1)",
            "CREATE TEMP TABLE x (a int)",
            "SET search_path = foo",
            "BEGIN",
            "SELECT * FROM pg_stat_activity",
            "SELECT * FROM pg_stats WHERE tablename = 't'",
            "SELECT * FROM pg_catalog.pg_statistic",
            "SELECT name, setting FROM pg_settings",
            "SELECT setting FROM pg_settings WHERE name = 'search_path'",
            "SELECT setting FROM pg_settings WHERE name = 'max_index_keys' OR name = 'work_mem'",
            "SELECT nextval('s') FROM pg_class",
            "SELECT relname INTO TEMP x FROM pg_class",
            "SELECT * FROM pg_class FOR UPDATE",
            "SELECT relname FROM pg_class; SELECT * FROM t",
            "SELECT FROM WHERE",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM pg_class",
            "SELECT * FROM \"PG_CLASS\"",
            "",
        ] {
            assert_eq!(route(sql), Route::Node, "{sql}");
        }
    }

    #[test]
    fn allowed_functions_let_relation_less_queries_through() {
        let policy = CatalogPolicy {
            allowed_functions: vec!["pg_encoding_to_char".into()],
            ..CatalogPolicy::default()
        };
        assert_eq!(
            classify("SELECT pg_encoding_to_char(6)", &policy).route,
            Route::Catalog
        );
        assert_eq!(
            classify("SELECT pg_encoding_to_char(6), version()", &policy).route,
            Route::Node
        );
    }

    #[test]
    fn facts_name_relations_kinds_and_parse_errors() {
        let c = classify(
            "SELECT * FROM pg_class c JOIN sales.orders o ON true",
            &CatalogPolicy::default(),
        );
        let facts = c.facts.unwrap();
        assert!(facts.relations.contains("pg_catalog.pg_class"));
        assert!(facts.relations.contains("sales.orders"));
        assert!(c.reason.contains("sales.orders"), "{}", c.reason);
        assert!(classify("CREATE TABLE x (a int)", &CatalogPolicy::default()).is_ddl());
        assert!(classify("COMMENT ON TABLE x IS 'y'", &CatalogPolicy::default()).is_ddl());
        assert!(classify("SELECT * INTO t2 FROM t", &CatalogPolicy::default()).is_ddl());
        assert!(classify("CREATE ROLE r", &CatalogPolicy::default()).is_ddl());
        assert!(classify("GRANT SELECT ON t TO r", &CatalogPolicy::default()).is_ddl());
        let projection = classify(
            "/* vsql */ CREATE PROJECTION p AS SELECT a FROM t ORDER BY a SEGMENTED BY HASH(a) ALL NODES KSAFE 1",
            &CatalogPolicy::default(),
        );
        assert!(projection.facts.is_none() && projection.is_ddl());
        assert!(!classify("SELECT 1 // 2", &CatalogPolicy::default()).is_ddl());
        assert!(!classify("SELECT a FROM t", &CatalogPolicy::default()).is_ddl());
        assert!(!classify("CREATE TEMP TABLE x (a int)", &CatalogPolicy::default()).is_ddl());
        assert!(
            !classify(
                "CREATE LOCAL TEMPORARY TABLE x AS SELECT 1",
                &CatalogPolicy::default()
            )
            .is_ddl()
        );
        let bad = classify("SELEC 1", &CatalogPolicy::default());
        assert!(bad.parse_error.is_some());
        assert_eq!(bad.route, Route::Node);
    }
}
