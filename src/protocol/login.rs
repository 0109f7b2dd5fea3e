//! The client side of a login, as bytes: what a server's Authentication
//! request asks for ([`Request`], the one place that knows the codes of
//! PostgreSQL and of Vertica), and the message that answers it with a
//! password ([`Answerer`], SCRAM-SHA-256 included). No I/O: the catalog
//! copy's connections and translated Vertica sessions drive it.

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};

use super::backend::{
    AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL,
};
use super::frontend;

/// Vertica's SHA-512 password requests (codes 65536 and 66048).
const VERTICA_SHA512: [i32; 2] = [65536, 66048];
/// Vertica's MD5 request under its own code.
const VERTICA_MD5: i32 = 65541;
/// Vertica: the password is in its grace period; the login goes on.
const VERTICA_GRACE: i32 = 11;

/// What an Authentication request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// AuthenticationOk: the server let the client in.
    Ok,
    Cleartext,
    Md5 {
        salt: [u8; 4],
    },
    /// SASL, with the mechanisms the server offers (NUL-separated).
    Sasl {
        mechanisms: &'a [u8],
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Vertica's SHA-512 exchange.
    VerticaSha512 {
        salt: &'a [u8],
        user_salt: &'a [u8],
    },
    /// Vertica: nothing to answer.
    VerticaGrace,
    /// A method sluice cannot answer.
    Unsupported(i32),
}

/// Reads an Authentication message's body; `vertica`: the server speaks
/// Vertica's protocol, where codes 10–12 mean other things than SASL.
pub fn request(body: &[u8], vertica: bool) -> Request<'_> {
    let code = super::backend::auth_code(body);
    let rest = body.get(4..).unwrap_or_default();
    let salt = || {
        body.get(4..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4])
    };
    match code {
        AUTH_OK => Request::Ok,
        AUTH_CLEARTEXT => Request::Cleartext,
        AUTH_MD5 => Request::Md5 { salt: salt() },
        VERTICA_MD5 if vertica => Request::Md5 { salt: salt() },
        VERTICA_GRACE if vertica => Request::VerticaGrace,
        c if vertica && VERTICA_SHA512.contains(&c) => Request::VerticaSha512 {
            salt: body.get(4..8).unwrap_or_default(),
            user_salt: body.get(12..28).unwrap_or_default(),
        },
        AUTH_SASL if !vertica => Request::Sasl { mechanisms: rest },
        AUTH_SASL_CONTINUE if !vertica => Request::SaslContinue(rest),
        AUTH_SASL_FINAL if !vertica => Request::SaslFinal(rest),
        other => Request::Unsupported(other),
    }
}

/// Why a login cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the server asks for authentication method {0}, which sluice cannot answer")]
    Unsupported(i32),
    #[error("the server offers no SASL mechanism sluice can use (only SCRAM-SHA-256)")]
    NoMechanism,
    #[error("the server continued a SASL exchange that never started")]
    NoExchange,
    #[error("the SCRAM exchange with the server failed: {0}")]
    Scram(std::io::Error),
}

/// Answers a server's requests with a password; keeps the SCRAM exchange
/// between them.
#[derive(Default)]
pub struct Answerer {
    scram: Option<ScramSha256>,
}

impl Answerer {
    /// Appends the answer to `request` to `out`; nothing for requests that
    /// need none (Ok, a verified SCRAM final, Vertica's grace).
    pub fn answer(
        &mut self,
        request: &Request<'_>,
        user: &[u8],
        password: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), LoginError> {
        match request {
            Request::Ok | Request::VerticaGrace => {}
            Request::Cleartext => frontend::encode_password(out, password),
            Request::Md5 { salt } => {
                let hash = postgres_protocol::authentication::md5_hash(user, password, *salt);
                frontend::encode_password(out, hash.as_bytes());
            }
            Request::VerticaSha512 { salt, user_salt } => {
                let hash = super::vertica::sha512_password(password, user_salt, salt);
                frontend::encode_password(out, hash.as_bytes());
            }
            Request::Sasl { mechanisms } => {
                if !mechanisms
                    .split(|b| *b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes())
                {
                    return Err(LoginError::NoMechanism);
                }
                let scram = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::encode_sasl_initial_response(out, SCRAM_SHA_256, scram.message());
                self.scram = Some(scram);
            }
            Request::SaslContinue(data) => {
                let scram = self.scram.as_mut().ok_or(LoginError::NoExchange)?;
                scram.update(data).map_err(LoginError::Scram)?;
                frontend::encode_sasl_response(out, scram.message());
            }
            Request::SaslFinal(data) => {
                let mut scram = self.scram.take().ok_or(LoginError::NoExchange)?;
                scram.finish(data).map_err(LoginError::Scram)?;
            }
            Request::Unsupported(code) => return Err(LoginError::Unsupported(*code)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn codes_read_as_the_dialect_means_them() {
        assert_eq!(request(&body(0, b""), false), Request::Ok);
        assert_eq!(request(&body(3, b""), true), Request::Cleartext);
        assert_eq!(
            request(&body(5, &[1, 2, 3, 4]), false),
            Request::Md5 { salt: [1, 2, 3, 4] }
        );
        assert!(matches!(
            request(&body(10, b"SCRAM-SHA-256\0\0"), false),
            Request::Sasl { .. }
        ));
        assert_eq!(request(&body(11, b""), true), Request::VerticaGrace);
        assert_eq!(request(&body(10, b""), true), Request::Unsupported(10));
        assert!(matches!(
            request(&body(65536, &[0; 24]), true),
            Request::VerticaSha512 { .. }
        ));
        assert_eq!(
            request(&body(65536, &[0; 24]), false),
            Request::Unsupported(65536)
        );
        assert_eq!(request(b"\x00", false), Request::Unsupported(-1));
    }

    #[test]
    fn answers_are_password_messages_or_sasl_steps() {
        let mut a = Answerer::default();
        let mut out = BytesMut::new();
        a.answer(&Request::Cleartext, b"u", b"pw", &mut out)
            .unwrap();
        assert_eq!(&out[..], b"p\x00\x00\x00\x07pw\x00");
        out.clear();
        a.answer(&Request::Md5 { salt: [1, 2, 3, 4] }, b"u", b"pw", &mut out)
            .unwrap();
        assert!(out.starts_with(b"p") && out[5..].starts_with(b"md5"));
        out.clear();
        assert!(matches!(
            a.answer(
                &Request::Sasl {
                    mechanisms: b"OTHER\0\0"
                },
                b"u",
                b"pw",
                &mut out
            ),
            Err(LoginError::NoMechanism)
        ));
        assert!(matches!(
            a.answer(&Request::SaslContinue(b"r=x"), b"u", b"pw", &mut out),
            Err(LoginError::NoExchange)
        ));
        a.answer(
            &Request::Sasl {
                mechanisms: b"SCRAM-SHA-256\0\0",
            },
            b"u",
            b"pw",
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0], b'p');
    }
}
