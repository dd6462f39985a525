//! The file operations korder's durable stores perform, behind one trait.
//!
//! The embedded log (`korder-log`) and the block store (`korder-ledger`) reach the
//! disk only through [`Storage`] and [`StorageFile`]: a directory tree addressed by
//! relative paths (`/` separated, `""` is the root) and positional reads and writes on
//! open files. [`FsStorage`] is the real file system. With the `test-support` feature,
//! `sim::SimStorage` is an in-memory implementation that counts every mutating call,
//! crashes or fails at any of them, and builds the disk a restarted process would find
//! after a power loss, so that the stores' tests can crash at every sync point.
//!
//! What this crate must never do: interpret the bytes it stores, buffer writes, or
//! report data durable that has not been synced.

mod fs;
#[cfg(feature = "test-support")]
pub mod sim;

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

pub use fs::FsStorage;

/// A directory tree holding files. Paths are relative to the storage's root and use
/// `/` as separator; `""` names the root itself.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `dir` and its parents (`""`: the root). A directory created under the
    /// root is durable only after [`Storage::sync_dir`] of its parent, as a file is;
    /// the root (whose parent lies outside the storage) is made durable by this call.
    fn create_dir_all(&self, dir: &str) -> io::Result<()>;
    /// Names of the entries directly under `dir` (files and directories), sorted.
    /// A missing directory lists as empty.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Whether `path` names a directory.
    fn is_dir(&self, path: &str) -> bool;
    /// Whether `path` names a file.
    fn exists(&self, path: &str) -> bool;
    /// Opens the existing file `path` for reading and writing.
    fn open(&self, path: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates the file `path` for reading and writing, emptying it if it exists. Its
    /// directory entry is durable only after [`Storage::sync_dir`] of its directory.
    fn create(&self, path: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes the file `path` (durable after [`Storage::sync_dir`]). Handles already
    /// open keep working on the removed file.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Removes the empty directory `dir` (durable after [`Storage::sync_dir`] of its
    /// parent).
    fn remove_dir(&self, dir: &str) -> io::Result<()>;
    /// Makes the entries of `dir` (files created or removed) durable.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// How to name `path` in messages.
    fn describe(&self, path: &str) -> String;
}

/// One open file. Reads and writes are positional, so readers and a writer can share a
/// handle without a cursor.
pub trait StorageFile: Send + Sync + Debug + 'static {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `buf` from `pos`; fails if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at `pos`, extending the file if needed (a gap reads as zeros).
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Truncates or zero-extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back) durable.
    fn sync_data(&self) -> io::Result<()>;
}
