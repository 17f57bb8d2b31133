//! Authentication: which identity and role a `HELLO` token grants.
//!
//! With no tokens configured the server is in local development mode
//! (allowed on loopback only, see [`super::config`]): any token is accepted
//! and every connection is `admin` as the identity [`LOCAL_IDENTITY`].
//! Token comparison takes the same time whatever the token's content.

use super::config::{role_of, TokenConfig};
use tessera_protocol::Role;

/// The identity of every connection in local development mode.
pub const LOCAL_IDENTITY: &str = "local";

/// Who a connection is, once `HELLO` succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// For audit records and logs.
    pub identity: String,
    /// What it may do.
    pub role: Role,
}

/// The configured tokens.
#[derive(Debug)]
pub struct Auth {
    tokens: Vec<(Vec<u8>, Session)>,
}

impl Auth {
    /// From validated token settings (unknown roles are skipped; validation
    /// refuses them first).
    pub fn new(tokens: &[TokenConfig]) -> Auth {
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                let role = role_of(&t.role)?;
                let session = Session {
                    identity: t.identity.clone(),
                    role,
                };
                Some((t.token.as_bytes().to_vec(), session))
            })
            .collect();
        Auth { tokens }
    }

    /// True if no token is configured (local development mode).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The session `token` opens, if any.
    pub fn authenticate(&self, token: &str) -> Option<Session> {
        if self.is_open() {
            return Some(Session {
                identity: LOCAL_IDENTITY.into(),
                role: Role::Admin,
            });
        }
        let mut found = None;
        for (secret, session) in &self.tokens {
            if constant_time_eq(secret, token.as_bytes()) {
                found = Some(session.clone());
            }
        }
        found
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str, role: &str, who: &str) -> TokenConfig {
        TokenConfig {
            token: t.into(),
            role: role.into(),
            identity: who.into(),
        }
    }

    #[test]
    fn tokens_map_to_sessions() {
        let auth = Auth::new(&[token("r", "read", "ranker"), token("w", "write", "etl")]);
        assert!(!auth.is_open());
        assert_eq!(
            auth.authenticate("r"),
            Some(Session {
                identity: "ranker".into(),
                role: Role::Read
            })
        );
        assert_eq!(auth.authenticate("w").map(|s| s.role), Some(Role::Write));
        assert_eq!(auth.authenticate("x"), None);
        assert_eq!(auth.authenticate(""), None);
        assert_eq!(auth.authenticate("rr"), None);
    }

    #[test]
    fn no_tokens_means_local_admin() {
        let auth = Auth::new(&[]);
        assert!(auth.is_open());
        let s = auth.authenticate("anything").unwrap();
        assert_eq!((s.identity.as_str(), s.role), (LOCAL_IDENTITY, Role::Admin));
    }
}
