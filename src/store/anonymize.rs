//! Retention and erasure: caller and called numbers are replaced by a keyed hash (HMAC-SHA256,
//! `anon:` + 16 hex digits), so one consumer's calls stay linkable without the number.

use super::db::Db;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::Row;
use std::path::Path;

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

/// Shortest key accepted from an existing file.
const MIN_KEY: usize = 16;

/// Why the hash key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file exists but could not be read.
    #[error("cannot read the hash key {file}: {source}")]
    Read {
        /// The key file.
        file: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file is shorter than 16 bytes: replacing it would change every pseudonym, so
    /// an operator must look (restore it from a backup, or delete it to start a new key).
    #[error("the hash key {file} holds {len} bytes (at least {MIN_KEY} needed); restore it, or delete it to start a new key")]
    TooShort {
        /// The key file.
        file: String,
        /// Its length.
        len: usize,
    },
    /// The key file was missing and could not be created.
    #[error("cannot create the hash key {file}: {source}")]
    Create {
        /// The key file.
        file: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The hash key in `path`, created when missing: 32 random bytes from the OS, written to a
/// temporary file of mode 0600 in the same directory (created if needed), fsync'd, then linked
/// into place, so a reader never sees a partial key and a key another process created at the
/// same moment is never replaced (the loser reads the winner's). The directory is fsync'd.
pub fn key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(k) if k.len() >= MIN_KEY => return Ok(k),
        Ok(k) => return Err(KeyError::TooShort { file, len: k.len() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::Read { file, source }),
    }
    let created = create_key(path);
    match created {
        Ok(k) => Ok(k),
        // another process linked its key first: use that one
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::read(path) {
            Ok(k) if k.len() >= MIN_KEY => Ok(k),
            Ok(k) => Err(KeyError::TooShort { file, len: k.len() }),
            Err(source) => Err(KeyError::Read { file, source }),
        },
        Err(source) => Err(KeyError::Create { file, source }),
    }
}

fn create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut k = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
    let tmp = super::files::write_temp(dir, "anon.key", &k, 0o600)?;
    // link, not rename: a key that appeared meanwhile is kept (AlreadyExists)
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    super::files::sync_dir(dir);
    Ok(k)
}

impl Db {
    /// Anonymise caller and called of calls created before `cutoff` (RFC 3339 UTC), drop
    /// their DTMF digits (what a caller keyed in is as personal as the number) and delete
    /// their recordings. Returns
    /// how many calls were changed.
    pub async fn anonymize_before(&self, key: &[u8], cutoff: &str) -> Result<u64, sqlx::Error> {
        let rows: Vec<(String, String, String, Option<String>)> = match self {
            Db::Pg(p) => sqlx::query(
                "SELECT id::text AS id, caller, called, recording->>'path' AS rec FROM calls WHERE created_at < $1::text::timestamptz \
                 AND (caller NOT LIKE 'anon:%' OR called NOT LIKE 'anon:%' OR recording IS NOT NULL)",
            )
            .bind(cutoff)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| (r.get("id"), r.get("caller"), r.get("called"), r.get("rec")))
            .collect(),
            Db::Sqlite(p) => sqlx::query(
                "SELECT id, caller, called, json_extract(recording, '$.path') AS rec FROM calls WHERE created_at < ? \
                 AND (caller NOT LIKE 'anon:%' OR called NOT LIKE 'anon:%' OR recording IS NOT NULL)",
            )
            .bind(cutoff)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| (r.get("id"), r.get("caller"), r.get("called"), r.get("rec")))
            .collect(),
        };
        // the voice is as personal as the number: the files go first
        super::recordings::remove_files(rows.iter().filter_map(|r| r.3.as_deref()));
        let anon = |n: &str| {
            if n.starts_with("anon:") {
                n.to_owned()
            } else {
                pseudonym(key, n)
            }
        };
        for (id, caller, called, _) in &rows {
            match self {
                Db::Pg(p) => {
                    sqlx::query(
                        "UPDATE calls SET caller = $1, called = $2, dtmf = NULL, recording = NULL WHERE id = $3::text::uuid",
                    )
                    .bind(anon(caller))
                    .bind(anon(called))
                    .bind(id)
                    .execute(p)
                    .await?;
                }
                Db::Sqlite(p) => {
                    sqlx::query(
                        "UPDATE calls SET caller = ?, called = ?, dtmf = NULL, recording = NULL WHERE id = ?",
                    )
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
            let files: Vec<String> = match self {
                Db::Pg(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT recording->>'path' FROM calls WHERE {col} = $1 AND recording->>'path' IS NOT NULL"
                )))
                .bind(&number)
                .fetch_all(p)
                .await?,
                Db::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT json_extract(recording, '$.path') FROM calls WHERE {col} = ? AND json_extract(recording, '$.path') IS NOT NULL"
                )))
                .bind(&number)
                .fetch_all(p)
                .await?,
            };
            super::recordings::remove_files(files.iter().map(String::as_str));
            n += match self {
                Db::Pg(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE calls SET {col} = $1, dtmf = NULL, recording = NULL WHERE {col} = $2"
                )))
                .bind(&anon)
                .bind(&number)
                .execute(p)
                .await?
                .rows_affected(),
                Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE calls SET {col} = ?, dtmf = NULL, recording = NULL WHERE {col} = ?"
                )))
                .bind(&anon)
                .bind(&number)
                .execute(p)
                .await?
                .rows_affected(),
            };
        }
        if let Db::Sqlite(p) = self {
            // the old pages live on in the write-ahead log until a checkpoint
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await;
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

    #[test]
    fn a_missing_key_is_created_private_and_whole_and_a_short_one_is_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dce-key-{}", crate::ids::uuid()));
        let path = dir.join("spool").join("anon.key");
        let k = key(&path).unwrap();
        assert_eq!(k.len(), 32);
        assert_ne!(k, vec![0u8; 32], "random bytes");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(key(&path).unwrap(), k, "read back, not made anew");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["anon.key"], "no temporary file left");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(key(&path), Err(KeyError::TooShort { len: 5, .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
