//! Retention and erasure: caller and called numbers are replaced by a keyed hash (HMAC-SHA256,
//! `anon:` + 16 hex digits), so one consumer's calls stay linkable without the number.

use super::db::Db;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::Row;

/// The anonymised form of a number under `key`.
pub fn pseudonym(key: &[u8], number: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(number.as_bytes());
    let out = mac.finalize().into_bytes();
    format!(
        "anon:{}",
        out[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The hash key: read from `path`, created (32 random bytes from the OS) when missing.
pub fn key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(k) if k.len() >= 16 => Ok(k),
        _ => {
            let mut k = vec![0u8; 32];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
            std::fs::write(path, &k)?;
            Ok(k)
        }
    }
}

impl Db {
    /// Anonymise caller and called of calls created before `cutoff` (RFC 3339 UTC). Returns
    /// how many calls were changed.
    pub async fn anonymize_before(&self, key: &[u8], cutoff: &str) -> Result<u64, sqlx::Error> {
        let rows: Vec<(String, String, String)> = match self {
            Db::Pg(p) => sqlx::query(
                "SELECT id::text AS id, caller, called FROM calls WHERE created_at < $1::text::timestamptz \
                 AND (caller NOT LIKE 'anon:%' OR called NOT LIKE 'anon:%')",
            )
            .bind(cutoff)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| (r.get("id"), r.get("caller"), r.get("called")))
            .collect(),
            Db::Sqlite(p) => sqlx::query(
                "SELECT id, caller, called FROM calls WHERE created_at < ? AND (caller NOT LIKE 'anon:%' OR called NOT LIKE 'anon:%')",
            )
            .bind(cutoff)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| (r.get("id"), r.get("caller"), r.get("called")))
            .collect(),
        };
        let anon = |n: &str| {
            if n.starts_with("anon:") {
                n.to_owned()
            } else {
                pseudonym(key, n)
            }
        };
        for (id, caller, called) in &rows {
            match self {
                Db::Pg(p) => {
                    sqlx::query(
                        "UPDATE calls SET caller = $1, called = $2 WHERE id = $3::text::uuid",
                    )
                    .bind(anon(caller))
                    .bind(anon(called))
                    .bind(id)
                    .execute(p)
                    .await?;
                }
                Db::Sqlite(p) => {
                    sqlx::query("UPDATE calls SET caller = ?, called = ? WHERE id = ?")
                        .bind(anon(caller))
                        .bind(anon(called))
                        .bind(id)
                        .execute(p)
                        .await?;
                }
            }
        }
        Ok(rows.len() as u64)
    }

    /// Anonymise every record of one number (as caller or called; any common format). Returns
    /// the calls changed.
    pub async fn erase_number(&self, key: &[u8], number: &str) -> Result<u64, sqlx::Error> {
        let number = dce_routing::normalize(number).unwrap_or_else(|| number.to_owned());
        let anon = pseudonym(key, &number);
        let mut n = 0;
        for col in ["caller", "called"] {
            n += match self {
                Db::Pg(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE calls SET {col} = $1 WHERE {col} = $2"
                )))
                .bind(&anon)
                .bind(&number)
                .execute(p)
                .await?
                .rows_affected(),
                Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE calls SET {col} = ? WHERE {col} = ?"
                )))
                .bind(&anon)
                .bind(&number)
                .execute(p)
                .await?
                .rows_affected(),
            };
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_per_key_and_hide_the_number() {
        let a = pseudonym(b"key-one-0123456789", "13105551234");
        assert_eq!(a, pseudonym(b"key-one-0123456789", "13105551234"));
        assert_ne!(a, pseudonym(b"key-two-0123456789", "13105551234"));
        assert_ne!(a, pseudonym(b"key-one-0123456789", "13105551235"));
        assert!(a.starts_with("anon:") && a.len() == 21 && !a.contains("5551234"));
    }
}
