//! SMTP AUTH credentials: a file of `user:hash` lines.
//!
//! Passwords are never stored in plaintext. Hashes are SHA-512-crypt (`$6$`,
//! what `mkpasswd -m sha-512` and most Linux tooling produce) or argon2 in
//! PHC form (`$argon2id$…`, what `sluice passwd` produces). Verification is
//! deliberately slow, so ingress runs it off the core's executor.

use std::collections::HashMap;
use std::path::Path;

/// Users allowed to authenticate, with their password hashes.
#[derive(Debug, Default, Clone)]
pub struct Users {
    hashes: HashMap<String, String>,
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
        }
        Ok(Users { hashes })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks a password. Unknown users cost a verification too, so timing
    /// does not reveal which user names exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        const DECOY: &str = "$6$rounds=5000$sluicedecoysalt$";
        match self.hashes.get(user) {
            Some(hash) => verify_hash(hash, password),
            None => {
                let _ = verify_hash(DECOY, password);
                false
            }
        }
    }
}

fn verify_hash(hash: &str, password: &str) -> bool {
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

    #[test]
    fn plaintext_and_malformed_lines_are_refused_with_line_numbers() {
        assert_eq!(Users::parse("\nalice:secret\n").unwrap_err().0, 2);
        assert_eq!(Users::parse("nocolon\n").unwrap_err().0, 1);
        let h = hash_password("x").unwrap();
        assert_eq!(Users::parse(&format!("a:{h}\na:{h}\n")).unwrap_err().0, 2);
    }
}
