//! The file operations the block store needs, behind a trait, so tests can run the
//! store over a crash-simulating in-memory implementation ([`crate::sim`]).
//!
//! Paths are relative to the storage's root and use `/` as separator.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory tree holding files.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &str) -> io::Result<()>;
    /// Names of the entries directly under `dir` (files and directories), sorted.
    /// A missing directory lists as empty.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Whether `path` names a directory.
    fn is_dir(&self, path: &str) -> bool;
    /// Whether `path` names a file.
    fn exists(&self, path: &str) -> bool;
    /// Opens `path` for reading and writing, creating it when `create` is set.
    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Makes the entries of `dir` (file creations and removals) durable.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
}

/// An open file.
pub trait StorageFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `offset`; fails if the file is shorter.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`, extending the file if needed (a gap reads as zeros).
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or zero-extends to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
}

/// [`Storage`] over the real file system, rooted at a directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage rooted at `root` (created on first use).
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
}

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        fs::create_dir_all(self.path(dir))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(self.path(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
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

    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(create);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o660);
        }
        let file = opts.open(self.path(path))?;
        Ok(Arc::new(FsFile { file }))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.path(path))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }
}
