//! [`Storage`] over the real file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Storage, StorageFile};

/// Mode of the files korder creates (as Fabric's ledger does): owner and group only.
const FILE_MODE: u32 = 0o660;

/// The real file system, rooted at a directory. Nothing is touched until first use.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage rooted at `root` (create it with `create_dir_all("")`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Creates the root and its missing ancestors, syncing the parent of each one
    /// created: these entries lie outside the storage, where no `sync_dir` reaches.
    fn create_root(&self) -> io::Result<()> {
        let missing: Vec<&Path> = self
            .root
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.is_dir())
            .collect();
        fs::create_dir_all(&self.root)?;
        for created in missing.iter().rev() {
            let parent = match created.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    fn open_with(&self, path: &str, opts: &mut OpenOptions) -> io::Result<Arc<dyn StorageFile>> {
        let file = opts.read(true).write(true).open(self.path(path))?;
        Ok(Arc::new(FsFile(file)))
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        if !self.root.is_dir() {
            self.create_root()?;
        }
        fs::create_dir_all(self.path(dir))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(self.path(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn is_dir(&self, path: &str) -> bool {
        self.path(path).is_dir()
    }

    fn exists(&self, path: &str) -> bool {
        self.path(path).is_file()
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.open_with(path, &mut OpenOptions::new())
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn StorageFile>> {
        self.open_with(
            path,
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .mode(FILE_MODE),
        )
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.path(path))
    }

    fn remove_dir(&self, dir: &str) -> io::Result<()> {
        fs::remove_dir(self.path(dir))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }

    fn describe(&self, path: &str) -> String {
        self.path(path).display().to_string()
    }
}

#[derive(Debug)]
struct FsFile(File);

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Files and directories round-trip through the real file system: create empties,
    /// open keeps, list is sorted and tolerates a missing directory, remove removes.
    #[test]
    fn files_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let s = FsStorage::new(tmp.path().join("top/root"));
        assert_eq!(s.list("").unwrap(), Vec::<String>::new());
        s.create_dir_all("a/b").unwrap();
        assert!(
            s.is_dir("") && tmp.path().join("top").is_dir(),
            "the root's ancestors"
        );
        assert!(s.is_dir("a/b") && !s.exists("a/b"));
        let f = s.create("a/b/x").unwrap();
        f.write_all_at(b"hello", 3).unwrap();
        f.sync_data().unwrap();
        s.sync_dir("a/b").unwrap();
        assert_eq!(f.len().unwrap(), 8);
        let mut buf = [9u8; 8];
        s.open("a/b/x").unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"\0\0\0hello");
        assert!(
            f.read_exact_at(&mut buf, 1).is_err(),
            "reads past the end fail"
        );
        s.create("a/b/w").unwrap();
        assert_eq!(s.list("a/b").unwrap(), vec!["w".to_owned(), "x".to_owned()]);
        assert!(
            s.create("a/b/x").unwrap().is_empty().unwrap(),
            "create empties"
        );
        s.remove("a/b/x").unwrap();
        assert!(!s.exists("a/b/x"));
        assert!(s.open("a/b/x").is_err());
        assert!(s.describe("a/b/w").ends_with("root/a/b/w"));
    }
}
