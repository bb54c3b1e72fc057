//! The desk's users: name, role, argon2id hash of the password.
//!
//! Promises: passwords are never stored, only their argon2id hash with a random salt;
//! `verify` takes the same time whether or not the user exists.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// A hash to verify against when the user does not exist, so timing tells nothing.
fn dummy() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("no such user").unwrap_or_default())
}

fn hash(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let h = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    Ok(h.to_string())
}

impl Store {
    /// Adds a user or replaces an existing one's role and password.
    pub fn user_add(&self, name: &str, role: Role, password: &str) -> anyhow::Result<()> {
        let h = hash(password)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO users(name, role, hash, created_at) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
                params![name, role.as_str(), h, now_ms()],
            )?;
            Ok(())
        })
    }

    pub fn user_remove(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM users WHERE name = ?1", [name])? > 0))
    }

    pub fn user_list(&self) -> anyhow::Result<Vec<UserRow>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, role, created_at FROM users ORDER BY name")?;
            let rows = st.query_map([], |r| {
                let role: String = r.get(1)?;
                Ok(UserRow { name: r.get(0)?, role: Role::parse(&role).unwrap_or(Role::Viewer), created_at: r.get(2)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The user's role when `password` is theirs.
    pub fn user_verify(&self, name: &str, password: &str) -> anyhow::Result<Option<Role>> {
        let row: Option<(String, String)> = self.with(|c| {
            Ok(c.query_row("SELECT role, hash FROM users WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })?;
        let stored = row.as_ref().map_or(dummy(), |(_, h)| h.as_str());
        let parsed = PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(row.filter(|_| ok).and_then(|(role, _)| Role::parse(&role)))
    }

    /// The role of a user that still exists (a removed user's sessions end).
    pub fn user_role(&self, name: &str) -> anyhow::Result<Option<Role>> {
        self.with(|c| {
            let role: Option<String> =
                c.query_row("SELECT role FROM users WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            Ok(role.and_then(|r| Role::parse(&r)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_dummy_parses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.user_add("li", Role::Operator, "pw-1").unwrap();
        assert_eq!(store.user_verify("li", "pw-1").unwrap(), Some(Role::Operator));
        assert_eq!(store.user_verify("li", "pw-2").unwrap(), None);
        assert_eq!(store.user_verify("nobody", "pw-1").unwrap(), None);
        let h: String = store.with(|c| Ok(c.query_row("SELECT hash FROM users", [], |r| r.get(0))?)).unwrap();
        assert!(h.starts_with("$argon2id$") && !h.contains("pw-1"));
    }
}
