//! The admin console's commands, from the text of a simple Query.
//!
//! Keywords are case-insensitive; a trailing `;` is fine; several commands
//! separated by `;` run in order (psql -c "SHOW NODES; SHOW CLIENTS").
//! Node addresses are SQL string literals ('' for a quote inside).

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ShowNodes,
    ShowClients,
    ShowServers,
    ShowPools,
    ShowQueries,
    ShowRules,
    ShowAlerts,
    ShowCatalog,
    ShowConfig,
    ShowVersion,
    ShowHelp,
    Reload,
    PauseNode(String),
    ResumeNode(String),
    KillClient(u64),
}

/// Why a text is not a command; the message is shown to the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

pub const COMMANDS: &str = "SHOW NODES | CLIENTS | SERVERS | POOLS | QUERIES | RULES | ALERTS | CATALOG | CONFIG | VERSION | HELP, RELOAD, PAUSE NODE 'host:port', RESUME NODE 'host:port', KILL CLIENT id";

/// Splits a query text into its statements and parses each; blank
/// statements are skipped.
pub fn parse_all(text: &str) -> Vec<Result<Command, ParseError>> {
    split_statements(text)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(&s))
        .collect()
}

/// Splits at `;` outside string literals.
fn split_statements(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.last_mut().expect("never empty").push(c);
            }
            ';' if !quoted => out.push(String::new()),
            _ => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Literal(String),
    Number(u64),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => s.push(c),
                    None => return Err(ParseError("a string literal is not closed with '".into())),
                }
            }
            tokens.push(Token::Literal(s));
        } else if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                s.push(d);
                chars.next();
            }
            let n = s
                .parse()
                .map_err(|_| ParseError(format!("{s} is too large for a client id")))?;
            tokens.push(Token::Number(n));
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                s.push(d.to_ascii_uppercase());
                chars.next();
            }
            tokens.push(Token::Word(s));
        } else {
            return Err(ParseError(format!("unexpected character {c:?}")));
        }
    }
    Ok(tokens)
}

/// Parses one statement.
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let tokens = tokenize(text)?;
    let words: Vec<&str> = tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) => w.as_str(),
            _ => "",
        })
        .collect();
    let unknown = || {
        ParseError(format!(
            "unknown admin command {:?}; the console understands: {COMMANDS}",
            text.trim()
        ))
    };
    match (words.as_slice(), tokens.as_slice()) {
        (["SHOW", what], _) => match *what {
            "NODES" => Ok(Command::ShowNodes),
            "CLIENTS" => Ok(Command::ShowClients),
            "SERVERS" => Ok(Command::ShowServers),
            "POOLS" => Ok(Command::ShowPools),
            "QUERIES" => Ok(Command::ShowQueries),
            "RULES" => Ok(Command::ShowRules),
            "ALERTS" => Ok(Command::ShowAlerts),
            "CATALOG" => Ok(Command::ShowCatalog),
            "CONFIG" => Ok(Command::ShowConfig),
            "VERSION" => Ok(Command::ShowVersion),
            "HELP" => Ok(Command::ShowHelp),
            _ => Err(unknown()),
        },
        (["HELP"], _) => Ok(Command::ShowHelp),
        (["RELOAD"], _) => Ok(Command::Reload),
        (["PAUSE", "NODE", _], [_, _, Token::Literal(addr)]) => {
            Ok(Command::PauseNode(addr.clone()))
        }
        (["RESUME", "NODE", _], [_, _, Token::Literal(addr)]) => {
            Ok(Command::ResumeNode(addr.clone()))
        }
        (["PAUSE" | "RESUME", "NODE", ..], _) => Err(ParseError(format!(
            "{} NODE takes one node address in quotes, as written in warehouse.nodes, e.g. {} NODE '127.0.0.1:5442'",
            words[0], words[0]
        ))),
        (["KILL", "CLIENT", _], [_, _, Token::Number(id)]) => Ok(Command::KillClient(*id)),
        (["KILL", ..], _) => Err(ParseError(
            "KILL CLIENT takes a client id as SHOW CLIENTS lists it, e.g. KILL CLIENT 12".into(),
        )),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_in_any_case() {
        assert_eq!(parse("show nodes"), Ok(Command::ShowNodes));
        assert_eq!(parse("  SHOW   Clients  "), Ok(Command::ShowClients));
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(
            parse("pause node '127.0.0.1:5442'"),
            Ok(Command::PauseNode("127.0.0.1:5442".into()))
        );
        assert_eq!(
            parse("RESUME NODE 'it''s'"),
            Ok(Command::ResumeNode("it's".into()))
        );
        assert_eq!(parse("kill client 42"), Ok(Command::KillClient(42)));
    }

    #[test]
    fn several_statements_run_in_order() {
        let all = parse_all("SHOW NODES; show version;; ");
        assert_eq!(all, vec![Ok(Command::ShowNodes), Ok(Command::ShowVersion)]);
        assert_eq!(
            parse_all("PAUSE NODE 'a;b'"),
            vec![Ok(Command::PauseNode("a;b".into()))]
        );
        assert!(parse_all("").is_empty());
    }

    #[test]
    fn mistakes_say_what_is_expected() {
        let e = parse("SELECT 1").unwrap_err();
        assert!(e.0.contains("unknown admin command \"SELECT 1\""), "{e:?}");
        assert!(e.0.contains("SHOW NODES"), "{e:?}");
        assert!(parse("PAUSE NODE 127").unwrap_err().0.contains("in quotes"));
        assert!(
            parse("KILL CLIENT 'x'")
                .unwrap_err()
                .0
                .contains("client id")
        );
        assert!(parse("KILL CLIENT 99999999999999999999999").is_err());
        assert!(
            parse("PAUSE NODE 'open")
                .unwrap_err()
                .0
                .contains("not closed")
        );
        assert!(parse("SHOW nodes extra").is_err());
        assert!(parse("SHOW").is_err());
        assert!(parse("\u{0}").is_err());
    }
}
