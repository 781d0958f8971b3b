//! Files replaced whole and atomically: written to a temporary file in the same directory,
//! fsync'd, renamed over the old one, and the directory fsync'd. A reader sees the old file or
//! the new one, never half of either, and a crash leaves at most a stray temporary file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Temporary files start with this (so a directory scan can skip them).
pub const TEMP_PREFIX: &str = ".tmp-";

/// A new, empty temporary file `dir/.tmp-<stem>.<pid>.<nanos>` of `mode`, opened for writing.
pub fn create_temp(dir: &Path, stem: &str, mode: u32) -> std::io::Result<(File, PathBuf)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(
        "{TEMP_PREFIX}{stem}.{}.{nanos}",
        std::process::id()
    ));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)?;
    Ok((f, path))
}

/// `bytes` in a new fsync'd temporary file of `mode` in `dir`; its path.
pub fn write_temp(dir: &Path, stem: &str, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let (mut f, path) = create_temp(dir, stem, mode)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Move a finished temporary file over `path` and fsync the directory.
pub fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Replace `path` by `bytes` atomically (file mode `mode` when it is created).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = write_temp(dir, &stem, bytes, mode)?;
    commit(&tmp, path)
}

/// fsync a directory (so a rename or link in it is durable); best effort.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_is_whole_and_keeps_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("dce-files-{}", crate::ids::uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("list");
        replace(&p, b"one\n", 0o600).unwrap();
        replace(&p, b"two\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["list"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
