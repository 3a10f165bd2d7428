//! The admin API's bearer token: where it lives, how it is made, how a
//! request's header is checked.
//!
//! The token is a file, not a configuration value, so the configuration can
//! be world-readable and `sluicectl` on the same host can read the token
//! with the same permissions as the daemon's state (mode 0600).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads the token from `path`, creating it (32 random bytes as hex, mode
/// 0600) when it does not exist.
pub fn load_or_create(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            check_private(path)?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                return Err(format!(
                    "{}: the admin token is shorter than 16 characters",
                    path.display()
                ));
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(format!(
            "{}: cannot read the admin token: {e}",
            path.display()
        )),
    }
}

/// A token others can read, or one another user could have written, is
/// refused: whoever holds it can pause, bounce and delete mail.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| format!("{}: cannot check the admin token: {e}", path.display()))?;
    let mode = m.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: the admin token is readable or writable by others (mode {mode:04o}); \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Err(format!(
            "{}: the admin token belongs to uid {}, not to this process (uid {me}) or root",
            path.display(),
            m.uid()
        ));
    }
    Ok(())
}

fn create(path: &Path) -> Result<String, String> {
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let err = |e: std::io::Error| format!("{}: cannot create the admin token: {e}", path.display());
    // create_new: never overwrite a token another process just wrote.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(err)?;
    Ok(token)
}

/// Whether an `Authorization` header value carries `token`. The comparison
/// takes the same time wherever the first difference is, so response times
/// do not reveal a prefix of the token.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false; // the length is not secret: every token has 64 hex digits
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin.token");
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), t, "read back, not regenerated");
        let good = format!("Bearer {t}");
        assert!(authorized(Some(good.as_bytes()), &t));
        assert!(!authorized(Some(t.as_bytes()), &t), "scheme required");
        assert!(!authorized(Some(b"Bearer nope"), &t));
        assert!(!authorized(None, &t));
    }
}
