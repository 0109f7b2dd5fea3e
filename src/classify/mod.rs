//! What a query is, decided from its text alone: which relations it reads,
//! whether it writes, and so where it should run.
//!
//! * [`classifier`]: parses SQL (sqlparser, PostgreSQL dialect) and reduces
//!   each statement to [`Facts`], then decides the [`Route`].
//! * [`fingerprint`]: one identity per query shape (literals masked), and
//!   the lexer that masks sample texts.
//! * [`rules`]: the bad-query rules and their verdict on a classified query.
//! * [`scan`]: relations of text sqlparser cannot parse (Vertica-only
//!   syntax), found by a token scan, for rules' `tables` conditions.
//! * [`cache`]: a bounded cache of decisions by query text, since BI tools
//!   repeat the same metadata queries verbatim.
//! * [`pg_catalog`]: the relations of pg_catalog, to resolve unqualified names.
//!
//! Nothing here does I/O or reads global state: `classify` is a pure function
//! of the text and the [`CatalogPolicy`].

pub mod cache;
pub mod classifier;
pub mod fingerprint;
pub mod pg_catalog;
pub mod rules;
pub mod scan;

pub use cache::ClassificationCache;
pub use classifier::{
    CatalogPolicy, Classification, Facts, Route, StatementFacts, StatementKind, classify,
};
pub use fingerprint::Fingerprint;
pub use rules::{Action, Rule, RuleSet, SessionInfo, Verdict};
