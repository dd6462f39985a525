//! Exclusive ownership of a data directory: one `korder start` per ledger and per
//! embedded log.
//!
//! The lock is an advisory `flock` on `<dir>/.korder.lock`, held for the life of the
//! process and released by the kernel when the process ends, however it ends (a
//! SIGKILL leaves no stale lock). The file holds the holder's pid so that a refused
//! second process can name it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in a locked directory.
pub const LOCK_FILE: &str = ".korder.lock";

/// A held lock on a directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock without waiting; refuses when
    /// another process holds it, naming that process's pid.
    pub fn acquire(dir: &Path) -> anyhow::Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let io = |e: std::io::Error| anyhow::anyhow!("cannot lock {}: {e}", path.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: the file names the current holder until the lock
        // is ours.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = match text.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                anyhow::bail!(
                    "{} is in use by another korder process (pid {pid}, lock file {}); stop it or choose another directory",
                    dir.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on a locked directory is refused with the holder's pid, and the
    /// directory can be locked again once the first lock is dropped.
    #[test]
    fn second_lock_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&std::process::id().to_string()),
            "names the pid: {err}"
        );
        assert!(
            err.contains(&dir.path().display().to_string()),
            "names the directory: {err}"
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
