//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server side, against a
//! PostgreSQL verifier `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! Why written here: `postgres-protocol` (already a dependency through
//! tokio-postgres) has the client side and the verifier generation, which
//! sluice uses (plain-text passwords, tests), but no server side. pgwire's
//! server side is bound to its own connection and handler API, which the
//! admin console does not use. The server side is only the message syntax
//! and three HMAC/SHA-256 computations, on the `hmac`, `sha2` and `base64`
//! crates that postgres-protocol itself uses; nothing here is hand-rolled
//! cryptography. Channel binding (SCRAM-SHA-256-PLUS) is not offered.
//!
//! A client's exchange with sluice proves its ClientKey (the proof XOR the
//! client signature, checked against StoredKey): [`Proven`] keeps it, and
//! [`KeyLogin`] logs in to a node that stores the same verifier with it,
//! as PgBouncer's SCRAM passthrough does, so that sluice can open node
//! connections for a client it authenticated without ever knowing the
//! password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"SCRAM-SHA-256$***\"")
    }
}

impl Verifier {
    /// True when `text` is meant as a verifier rather than a plain password.
    pub fn is_verifier(text: &str) -> bool {
        text.starts_with("SCRAM-SHA-256$")
    }

    /// Parses PostgreSQL's verifier text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Verifier, &'static str> {
        const SHAPE: &str = "is not a SCRAM-SHA-256 verifier of the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or(SHAPE)?;
        let (params, keys) = rest.split_once('$').ok_or(SHAPE)?;
        let (iterations, salt) = params.split_once(':').ok_or(SHAPE)?;
        let (stored, server) = keys.split_once(':').ok_or(SHAPE)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or("has an iteration count that is not a positive number")?;
        let salt = B64
            .decode(salt)
            .map_err(|_| "has a salt that is not base64")?;
        let key = |k: &str| -> Result<[u8; 32], &'static str> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or("has a key that is not 32 bytes of base64")
        };
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// A verifier for a plain-text password, with a random salt, as
    /// PostgreSQL would store it.
    pub fn from_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).expect("postgres-protocol makes valid verifiers")
    }

    /// A verifier no password matches, for unknown users: they go through
    /// the same exchange and fail at the same step, so a client cannot tell
    /// an unknown user from a wrong password.
    pub fn impossible() -> Verifier {
        let mut salt = vec![0u8; 16];
        rand::fill(&mut salt[..]);
        let mut stored_key = [0u8; 32];
        rand::fill(&mut stored_key[..]);
        Verifier {
            iterations: 4096,
            salt,
            stored_key,
            server_key: [0; 32],
        }
    }
}

/// Why an exchange failed. The client is told only that authentication
/// failed; the reason goes to the log.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the client sent a malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("the client asked for channel binding, which the admin console does not offer")]
    ChannelBinding,
    #[error("the password does not match")]
    WrongPassword,
    #[error("the server sent a malformed SCRAM message: {0}")]
    Server(&'static str),
}

/// What a client's exchange proved: its ClientKey, with the verifier's
/// ServerKey to check the node's signature. Never printed.
#[derive(Clone)]
pub struct Proven {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proven(***)")
    }
}

/// The server's half of one exchange, between its two messages.
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads client-first-message; returns the exchange and server-first-message.
    pub fn start(
        verifier: Verifier,
        client_first: &[u8],
    ) -> Result<(Exchange, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("unknown channel binding flag")),
        }
        let (_authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = format!("{flag},{_authzid},");
        // PostgreSQL ignores the SCRAM user name (the startup packet's counts).
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut random = [0u8; 18];
        rand::fill(&mut random[..]);
        let nonce = format!("{client_nonce}{}", B64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Exchange {
                verifier,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks client-final-message; returns server-final-message and what
    /// the client proved.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Proven), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if binding != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Malformed("channel binding data does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let computed = Sha256::digest(client_key);
        // Constant time: the comparison must not tell how many bytes matched.
        let diff = computed
            .iter()
            .zip(self.verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        let proven = Proven {
            client_key,
            server_key: self.verifier.server_key,
        };
        Ok((format!("v={}", B64.encode(server_signature)), proven))
    }
}

/// The client's half of an exchange with a node, from proven keys.
pub struct KeyLogin {
    keys: Proven,
    client_first_bare: String,
    /// The server's signature, expected in server-final-message.
    expected: Option<[u8; 32]>,
}

impl KeyLogin {
    /// Starts an exchange; returns it and client-first-message.
    pub fn new(keys: Proven) -> (KeyLogin, String) {
        let mut random = [0u8; 18];
        rand::fill(&mut random[..]);
        let client_first_bare = format!("n=,r={}", B64.encode(random));
        let first = format!("n,,{client_first_bare}");
        (
            KeyLogin {
                keys,
                client_first_bare,
                expected: None,
            },
            first,
        )
    }

    /// Reads server-first-message; returns client-final-message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Server("not UTF-8"))?;
        let nonce = text
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Server("no nonce"))?;
        let ours = &self.client_first_bare["n=,r=".len()..];
        if !nonce.starts_with(ours) || nonce.len() == ours.len() {
            return Err(ScramError::Server("the nonce does not extend the client's"));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key = Sha256::digest(self.keys.client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = self.keys.client_key[i] ^ signature[i];
        }
        self.expected = Some(hmac(&self.keys.server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message: the node knows the same verifier.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Server("not UTF-8"))?;
        let signature = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Server("no server signature"))?;
        match self.expected {
            Some(expected) if signature[..] == expected[..] => Ok(()),
            _ => Err(ScramError::Server("the server's signature does not match")),
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs a whole exchange with postgres-protocol's client (tokio-postgres's).
    fn login(verifier: &Verifier, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
        let (exchange, server_first) = Exchange::start(verifier.clone(), client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let (server_final, _) = exchange.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("the client accepts the server's signature");
        Ok(())
    }

    /// What a client proved to sluice logs sluice in where the same
    /// verifier is stored (another exchange, as a node would run it).
    #[test]
    fn proven_keys_log_in_again_without_the_password() {
        let v = Verifier::from_password("s3cret");
        let mut client = ScramSha256::new(b"s3cret", ChannelBinding::unrequested());
        let (exchange, server_first) = Exchange::start(v.clone(), client.message()).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let (_, proven) = exchange.finish(client.message()).unwrap();
        assert_eq!(format!("{proven:?}"), "Proven(***)");

        let (mut login, first) = KeyLogin::new(proven.clone());
        let (node, node_first) = Exchange::start(v.clone(), first.as_bytes()).unwrap();
        let last = login.update(node_first.as_bytes()).unwrap();
        let (node_final, _) = node.finish(last.as_bytes()).unwrap();
        login.finish(node_final.as_bytes()).unwrap();

        // Another user's verifier refuses the proof, and a node that does
        // not know the verifier cannot sign.
        let other = Verifier::from_password("s3cret");
        let (mut login, first) = KeyLogin::new(proven);
        let (node, node_first) = Exchange::start(other, first.as_bytes()).unwrap();
        let last = login.update(node_first.as_bytes()).unwrap();
        assert_eq!(
            node.finish(last.as_bytes()).err(),
            Some(ScramError::WrongPassword)
        );
        assert!(login.finish(b"v=AAAA").is_err());
        assert!(login.update(b"r=elsewhere,s=AA==,i=1").is_err());
    }

    #[test]
    fn the_right_password_logs_in_and_a_wrong_one_does_not() {
        let v = Verifier::from_password("s3cret");
        assert_eq!(login(&v, "s3cret"), Ok(()));
        assert_eq!(login(&v, "guess"), Err(ScramError::WrongPassword));
        assert_eq!(
            login(&Verifier::impossible(), "s3cret"),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn a_postgresql_verifier_parses() {
        // The format PostgreSQL keeps in pg_authid.rolpassword, made the
        // way libpq's PQencryptPasswordConn makes it.
        let text = postgres_protocol::password::scram_sha_256(b"ops-password");
        let v = Verifier::parse(&text).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(login(&v, "ops-password"), Ok(()));
        assert!(!format!("{v:?}").contains(&text[20..]));
    }

    #[test]
    fn malformed_verifiers_and_messages_are_refused() {
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:***$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "md5abc",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        let v = Verifier::from_password("x");
        assert!(Exchange::start(v.clone(), b"").is_err());
        assert!(Exchange::start(v.clone(), b"n,,n=,").is_err());
        assert_eq!(
            Exchange::start(v.clone(), b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(Exchange::start(v.clone(), &[0xff, 0xfe]).is_err());
        let (ex, _) = Exchange::start(v.clone(), b"n,,n=,r=abc").unwrap();
        assert!(
            ex.finish(b"c=biws,r=abc,p=AAAA").is_err(),
            "nonce must be the server's"
        );
        let (ex, first) = Exchange::start(v, b"n,,n=,r=abc").unwrap();
        let nonce = first.split(',').next().unwrap();
        assert_eq!(
            ex.finish(format!("c=biws,{nonce},p=AAAA").as_bytes()).err(),
            Some(ScramError::Malformed("proof is not 32 bytes of base64"))
        );
    }
}
