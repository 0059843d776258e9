//! The data directory is private to the node: created `0700`, and every file Townhall writes in
//! it (database, recordings, generated keys) `0600`. Recordings of private spaces, reports and
//! the signing secret must not be readable by other local users.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of directories Townhall creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files Townhall creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) owner-only; an existing directory that others can read or
/// enter is narrowed to owner-only too (with a warning), since it holds secrets.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data directory was open to other users: narrowing it to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Creates a new file readable and writable by the owner only; fails if it exists.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Creates (or truncates) a file readable and writable by the owner only.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)?;
    // `mode` applies only when the file is created; an older file keeps its bits otherwise.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Narrows an existing file to owner-only (no-op if it does not exist).
pub fn make_private(path: &Path) -> io::Result<()> {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_owner_only() {
        let base = std::env::temp_dir().join(format!("townhall-datadir-{}", rand::random::<u64>()));
        let dir = base.join("data");
        ensure_private_dir(&dir).expect("dir");
        assert_eq!(mode(&dir), DIR_MODE);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("open up");
        ensure_private_dir(&dir).expect("again");
        assert_eq!(mode(&dir), DIR_MODE, "an open directory is narrowed");
        let f = dir.join("a");
        create_new_private(&f).expect("file");
        assert_eq!(mode(&f), FILE_MODE);
        assert!(create_new_private(&f).is_err(), "create_new refuses an existing file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        create_private(&f).expect("truncate");
        assert_eq!(mode(&f), FILE_MODE);
        std::fs::remove_dir_all(&base).expect("cleanup");
    }
}
