//! SMTP AUTH credentials: a file of `user:hash` lines.
//!
//! Passwords are never stored in plaintext. Hashes are SHA-512-crypt (`$6$`,
//! what `mkpasswd -m sha-512` and most Linux tooling produce) or argon2 in
//! PHC form (`$argon2id$…`, what `sluice passwd` produces). Verification is
//! deliberately slow, so ingress runs it on a pool of its own
//! ([`pool::Verifier`]), never on a core's executor or its blocking thread.

pub mod pool;

use std::collections::HashMap;
use std::path::Path;

thread_local! {
    /// Password hashes computed on this thread: lets tests check that an
    /// unknown user costs exactly one hash, like a known one.
    static HASHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Password hashes computed so far on the calling thread.
pub fn hashes_computed() -> u64 {
    HASHES.with(|h| h.get())
}

/// Users allowed to authenticate, with their password hashes.
#[derive(Debug, Default, Clone)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// What an unknown user's password is checked against: a copy of the
    /// first user's hash, so the cost (algorithm and parameters) is exactly
    /// a real user's and response time does not tell which names exist.
    /// The result is discarded.
    decoy: Option<String>,
}

impl Users {
    /// Reads a users file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Users::parse(&text).map_err(|(line, msg)| format!("{}:{line}: {msg}", path.display()))
    }

    /// Parses `user:hash` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut hashes = HashMap::new();
        let mut decoy = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or((i + 1, "expected `user:hash`".to_string()))?;
            if user.is_empty() {
                return Err((i + 1, "empty user name".into()));
            }
            if !(hash.starts_with("$6$") || hash.starts_with("$argon2")) {
                return Err((
                    i + 1,
                    format!("user `{user}`: unsupported hash (use SHA-512-crypt `$6$…` or argon2 `$argon2id$…`; plaintext is never accepted)"),
                ));
            }
            if hashes.insert(user.to_string(), hash.to_string()).is_some() {
                return Err((i + 1, format!("user `{user}` is listed twice")));
            }
            decoy.get_or_insert_with(|| hash.to_string());
        }
        Ok(Users { hashes, decoy })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks a password. An unknown user costs the same hash as a known
    /// one (see `decoy`), so timing does not reveal which names exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match (self.hashes.get(user), &self.decoy) {
            (Some(hash), _) => verify_hash(hash, password),
            (None, Some(decoy)) => {
                let _ = verify_hash(decoy, password);
                false
            }
            // No users at all: nothing to tell apart.
            (None, None) => false,
        }
    }
}

fn verify_hash(hash: &str, password: &str) -> bool {
    HASHES.with(|h| h.set(h.get().wrapping_add(1)));
    if hash.starts_with("$6$") {
        sha_crypt::sha512_check(password, hash).is_ok()
    } else {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        match PasswordHash::new(hash) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }
}

/// Hashes a password with argon2id and a random salt, for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash_password("s3cret").unwrap();
        let users = Users::parse(&format!("# comment\nalice:{h}\n")).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "s3cret"));
    }

    #[test]
    fn sha512_crypt_verifies() {
        // crypt(3): `crypt("hunter2", "$6$saltsalt$")`
        let h = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
        let users = Users::parse(&format!("bob:{h}")).unwrap();
        assert!(users.verify("bob", "hunter2"));
        assert!(!users.verify("bob", "hunter3"));
    }

    /// Unknown and known users cost one hash each, with the same
    /// parameters, and take comparable time (the old decoy was a cheap
    /// SHA-512-crypt hash whatever the users' algorithm: an argon2 user
    /// answered many times slower than an unknown name).
    #[test]
    fn unknown_users_cost_the_same_hash_as_known_ones() {
        let h = hash_password("s3cret").unwrap();
        let users = Users::parse(&format!("alice:{h}\n")).unwrap();
        let time = |user: &str| {
            (0..3)
                .map(|_| {
                    let before = hashes_computed();
                    let t = std::time::Instant::now();
                    assert!(!users.verify(user, "wrong"));
                    let took = t.elapsed();
                    assert_eq!(hashes_computed(), before + 1, "{user}");
                    took
                })
                .min()
                .unwrap()
        };
        let known = time("alice");
        let unknown = time("mallory");
        assert!(
            unknown * 2 >= known && known * 2 >= unknown,
            "unknown user {unknown:?} vs known user {known:?}"
        );
        // Same algorithm and parameters: the decoy is a user's hash.
        assert_eq!(users.decoy.as_deref(), Some(h.as_str()));
    }

    #[test]
    fn plaintext_and_malformed_lines_are_refused_with_line_numbers() {
        assert_eq!(Users::parse("\nalice:secret\n").unwrap_err().0, 2);
        assert_eq!(Users::parse("nocolon\n").unwrap_err().0, 1);
        let h = hash_password("x").unwrap();
        assert_eq!(Users::parse(&format!("a:{h}\na:{h}\n")).unwrap_err().0, 2);
    }
}
