//! Problems found in a configuration file, each with its line and key.

use std::fmt;

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file; `None` for a key left out (its default applies).
    pub line: Option<usize>,
    /// Dotted key path, e.g. `warehouse.nodes[1]`.
    pub key: String,
    pub message: String,
}

/// Every problem found in one file. Validation does not stop at the first,
/// so that one run of `sluice check` lists all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}: {}", self.path, line, p.key, p.message)?,
                None => write!(f, "{}: {}: {}", self.path, p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
