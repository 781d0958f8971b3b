//! Where a stored call's recording is, and removing recordings (issue #17, decision 0020).

use super::db::Db;
use sqlx::Row;

/// A stored call's `recording` column, parsed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Stored {
    /// The WAV file, when the call was recorded.
    pub path: Option<String>,
    /// Not recorded: why.
    pub skipped: Option<String>,
}

impl Db {
    /// The recording of stored call `id`: `None` when there is no such call; `Some(None)`
    /// when it has none.
    pub async fn recording_of(&self, id: &str) -> Result<Option<Option<Stored>>, sqlx::Error> {
        if !super::conversions::is_call_id(id) {
            return Ok(None);
        }
        let id = id.to_ascii_lowercase();
        let row: Option<Option<String>> = match self {
            Db::Pg(p) => {
                sqlx::query("SELECT recording::text AS r FROM calls WHERE id = $1::text::uuid")
                    .bind(&id)
                    .fetch_optional(p)
                    .await?
                    .map(|r| r.get("r"))
            }
            Db::Sqlite(p) => sqlx::query("SELECT recording AS r FROM calls WHERE id = ?")
                .bind(&id)
                .fetch_optional(p)
                .await?
                .map(|r| r.get("r")),
        };
        Ok(row.map(|r| r.and_then(|j| serde_json::from_str(&j).ok())))
    }
}

/// Delete recording files (an erasure, retention): how many were removed. A file already gone
/// counts as removed; one that cannot be removed is logged and left.
pub fn remove_files<'a>(paths: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut n = 0;
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => n += 1,
            Err(e) => tracing::error!(path = p, error = %e, "cannot delete a recording"),
        }
    }
    n
}
