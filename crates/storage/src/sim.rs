//! An in-memory [`Storage`] that fails and crashes on demand, for tests (feature
//! `test-support`).
//!
//! # The crash model
//!
//! Every mutating call (`create`, `remove`, `sync_dir`, `create_dir_all` when it
//! creates a directory, and on a file `write_all_at`, `set_len`, `sync_data`) is a
//! numbered *operation*, counted from 0 over the storage's
//! life. A test can arm a crash at operation `n` ([`SimStorage::crash_at`]): that call
//! fails, a write landing half of its bytes first (a torn write), and every later call
//! (reads included) fails, as if the process had died there. Or it can make operation
//! `n` fail once ([`SimStorage::fail_at`]): a write then lands half of its bytes and
//! fails with `StorageFull` (a full disk); any other call fails without effect.
//!
//! The disk keeps, for each file, its content as of its last `sync_data` and the
//! writes and length changes issued since, in order; and for each directory, its
//! entries as of its last `sync_dir` (files and directories created, files emptied by
//! `create`, or removed since then may or may not be there after a power loss; a
//! removed file comes back with its synced content). A directory is durable once its
//! parent has been synced after its creation, as a file is; when it is lost, so is
//! everything under it. The root is always there.
//! [`SimStorage::crash_image`] builds the disk a restarted process would find after a
//! power loss now, in one of these ways ([`CrashMode`]):
//!
//! - only what was synced survives: synced data, synced directory entries;
//! - every write reached the disk, synced or not, and every entry change stands;
//! - of each file's unsynced bytes (past the longest prefix it shares with its synced
//!   content) the first half survives, or they all read as zeros, or as garbage — with
//!   the file's length kept in the last two;
//! - drawn from a seed: each changed directory entry (a file's or a directory's) is
//!   the synced or the current one;
//!   each file keeps its synced content plus an in-order prefix of the operations
//!   issued since, the next of which (a write) may have landed as a prefix of its
//!   bytes or as zeros over its range.
//!
//! The image is a fresh storage (nothing armed, everything durable); the storage it
//! was taken from is unchanged and may go on.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::{Storage, StorageFile};
use korder_types::sync::{CondvarExt, MutexExt};

/// What survives of unsynced data and directory entries in a crash image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only synced data and synced directory entries survive.
    DurableOnly,
    /// Every write reached the disk, synced or not; every entry change stands.
    AllWrites,
    /// Half of the unsynced tail of each file survives (a torn write).
    TornTail,
    /// The unsynced tail of each file is replaced by zero bytes.
    ZeroTail,
    /// The unsynced tail of each file is replaced by arbitrary bytes.
    GarbageTail,
    /// Per entry and per file, an outcome drawn from this seed (see the module docs):
    /// the same seed over the same history gives the same image.
    Seeded(u64),
}

impl CrashMode {
    /// Every mode that draws nothing from a seed, for tests that try them all.
    pub const FIXED: [CrashMode; 5] = [
        CrashMode::DurableOnly,
        CrashMode::AllWrites,
        CrashMode::TornTail,
        CrashMode::ZeroTail,
        CrashMode::GarbageTail,
    ];
}

/// A small deterministic generator (splitmix64), so outcomes replay from a seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// Generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SimRng::below needs a non-empty range");
        self.next_u64() % n
    }
}

/// A change to a file's content not synced yet.
#[derive(Debug, Clone)]
enum Op {
    Write { pos: usize, data: Vec<u8> },
    SetLen(usize),
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data } => {
            let end = pos + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*pos..end].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len, 0),
    }
}

/// A file's content, whatever names it goes by.
#[derive(Debug, Clone, Default)]
struct Inode {
    /// Content as of the last `sync_data`.
    durable: Vec<u8>,
    /// Content as the running process sees it.
    current: Vec<u8>,
    /// Operations since the last `sync_data`, in order.
    pending: Vec<Op>,
}

impl Inode {
    fn synced(bytes: Vec<u8>) -> Self {
        Self {
            durable: bytes.clone(),
            current: bytes,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, op: Op) {
        apply(&mut self.current, &op);
        self.pending.push(op);
    }
}

/// What an armed fault does to the operation that reaches it.
enum Fault {
    Crash,
    Fail,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    /// Path → inode, as the running process sees the directories.
    entries: BTreeMap<String, usize>,
    /// Path → inode, as of the last `sync_dir` of the path's directory.
    durable_entries: BTreeMap<String, usize>,
    /// Directories as the running process sees them (the root is implied).
    dirs: BTreeSet<String>,
    /// Directories whose entry in their parent has been synced since their creation.
    durable_dirs: BTreeSet<String>,
    ops: u64,
    crash_at: Option<u64>,
    fail_at: Option<u64>,
    crashed: bool,
    hold_syncs: bool,
    syncs_waiting: usize,
}

impl State {
    /// Counts one mutating operation: `Err` if the process is already down, the armed
    /// fault if this is its operation.
    fn op(&mut self) -> io::Result<Option<(Fault, u64)>> {
        self.alive()?;
        let n = self.ops;
        self.ops += 1;
        if self.crash_at == Some(n) {
            self.crashed = true;
            return Ok(Some((Fault::Crash, n)));
        }
        if self.fail_at == Some(n) {
            self.fail_at = None;
            return Ok(Some((Fault::Fail, n)));
        }
        Ok(None)
    }

    /// Counts one mutating operation that has no partial effect.
    fn plain_op(&mut self) -> io::Result<()> {
        match self.op()? {
            None => Ok(()),
            Some((Fault::Crash, n)) => Err(crash_error(n)),
            Some((Fault::Fail, n)) => Err(io::Error::other(format!(
                "simulated failure at operation {n}"
            ))),
        }
    }

    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("simulated crash: storage is down"))
        } else {
            Ok(())
        }
    }

    fn new_inode(&mut self, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }
}

fn crash_error(n: u64) -> io::Error {
    io::Error::other(format!("simulated crash at operation {n}"))
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {what}"))
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// Crash-simulating in-memory storage. Clones share the same disk.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    /// Wakes syncs held by [`SimStorage::hold_syncs`].
    released: Arc<Condvar>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Crash at operation `op` (0-based, counted from the storage's first operation):
    /// that call fails and so does every later one.
    pub fn crash_at(&self, op: u64) {
        self.lock().crash_at = Some(op);
    }

    /// Fail operation `op` once (a write lands half its bytes and fails with
    /// `StorageFull`); later calls work again.
    pub fn fail_at(&self, op: u64) {
        self.lock().fail_at = Some(op);
    }

    /// Whether the armed crash has happened.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Makes every `sync_data` wait until [`SimStorage::release_syncs`].
    pub fn hold_syncs(&self) {
        self.lock().hold_syncs = true;
    }

    /// Lets held and future syncs proceed.
    pub fn release_syncs(&self) {
        self.lock().hold_syncs = false;
        self.released.notify_all();
    }

    /// Syncs currently waiting for [`SimStorage::release_syncs`].
    pub fn syncs_waiting(&self) -> usize {
        self.lock().syncs_waiting
    }

    /// The content of file `path` as the running process sees it (synced or not).
    pub fn file_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        st.entries.get(path).map(|&i| st.inodes[i].current.clone())
    }

    /// Replaces the content of file `path`, durably, creating the file (and its
    /// directories) if needed; handles open on it see the new content. For tests that
    /// damage files on purpose.
    pub fn set_file_bytes(&self, path: &str, bytes: Vec<u8>) {
        let mut st = self.lock();
        let mut dir = parent(path);
        while !dir.is_empty() {
            st.dirs.insert(dir.to_owned());
            st.durable_dirs.insert(dir.to_owned());
            dir = parent(dir);
        }
        let inode = match st.entries.get(path) {
            Some(&i) => {
                st.inodes[i] = Inode::synced(bytes);
                i
            }
            None => st.new_inode(Inode::synced(bytes)),
        };
        st.entries.insert(path.to_owned(), inode);
        st.durable_entries.insert(path.to_owned(), inode);
    }

    /// Paths of every file, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    /// The disk a restarted process would find after a power loss now (see the module
    /// docs). This storage is left as it is.
    pub fn crash_image(&self, mode: CrashMode) -> SimStorage {
        let st = self.lock();
        let mut rng = match mode {
            CrashMode::Seeded(seed) => Some(SimRng::new(seed)),
            _ => None,
        };
        let mut image = State::default();
        // Parents sort before their children, so a directory's parent is decided first.
        for dir in &st.dirs {
            let entry_kept = st.durable_dirs.contains(dir)
                || match (&mut rng, mode) {
                    (_, CrashMode::DurableOnly) => false,
                    (Some(rng), _) => rng.below(2) == 0,
                    (None, _) => true,
                };
            let p = parent(dir);
            if entry_kept && (p.is_empty() || image.dirs.contains(p)) {
                image.dirs.insert(dir.clone());
            }
        }
        image.durable_dirs = image.dirs.clone();
        let paths: BTreeSet<&String> = st.entries.keys().chain(st.durable_entries.keys()).collect();
        for path in paths {
            let now = st.entries.get(path);
            let synced = st.durable_entries.get(path);
            let chosen = if now == synced {
                now
            } else if mode == CrashMode::DurableOnly {
                synced
            } else if let Some(rng) = &mut rng {
                if rng.below(2) == 0 { synced } else { now }
            } else {
                now
            };
            let Some(&inode) = chosen else { continue };
            let dir = parent(path);
            if !dir.is_empty() && !image.dirs.contains(dir) {
                continue;
            }
            let bytes = match &mut rng {
                Some(rng) => drawn_survivor(&st.inodes[inode], rng),
                None => survivor(&st.inodes[inode], mode),
            };
            let i = image.new_inode(Inode::synced(bytes));
            image.entries.insert(path.clone(), i);
            image.durable_entries.insert(path.clone(), i);
        }
        SimStorage {
            state: Arc::new(Mutex::new(image)),
            released: Arc::new(Condvar::new()),
        }
    }
}

/// What of one file survives a crash in a fixed `mode`.
fn survivor(data: &Inode, mode: CrashMode) -> Vec<u8> {
    let common = data
        .current
        .iter()
        .zip(&data.durable)
        .take_while(|(a, b)| a == b)
        .count();
    let unsynced = data.current.len().saturating_sub(common);
    if unsynced == 0 && data.current.len() == data.durable.len() {
        return data.durable.clone();
    }
    match mode {
        CrashMode::DurableOnly => data.durable.clone(),
        CrashMode::AllWrites | CrashMode::Seeded(_) => data.current.clone(),
        CrashMode::TornTail => data.current[..common + unsynced / 2].to_vec(),
        CrashMode::ZeroTail => {
            let mut out = data.current[..common].to_vec();
            out.resize(data.current.len(), 0);
            out
        }
        CrashMode::GarbageTail => {
            let mut out = data.current[..common].to_vec();
            let mut x: u32 = 0x9E37_79B9;
            while out.len() < data.current.len() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                out.push(x.to_le_bytes()[0]);
            }
            out
        }
    }
}

/// What of one file survives a crash, drawn from `rng`: the synced content, an
/// in-order prefix of the operations since, and the next one (a write) dropped, torn
/// or zero-filled.
fn drawn_survivor(data: &Inode, rng: &mut SimRng) -> Vec<u8> {
    let mut image = data.durable.clone();
    let keep = rng.below(data.pending.len() as u64 + 1) as usize;
    for op in &data.pending[..keep] {
        apply(&mut image, op);
    }
    if let Some(Op::Write { pos, data }) = data.pending.get(keep) {
        match rng.below(3) {
            0 => {}
            1 => {
                let cut = rng.below(data.len() as u64 + 1) as usize;
                apply(
                    &mut image,
                    &Op::Write {
                        pos: *pos,
                        data: data[..cut].to_vec(),
                    },
                );
            }
            _ => {
                let end = pos + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
            }
        }
    }
    image
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.alive()?;
        if dir.is_empty() || st.dirs.contains(dir) {
            return Ok(());
        }
        st.plain_op()?;
        let mut d = dir;
        while !d.is_empty() {
            st.dirs.insert(d.to_owned());
            d = parent(d);
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.alive()?;
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names = BTreeSet::new();
        for p in st.entries.keys().chain(st.dirs.iter()) {
            if let Some(rest) = p.strip_prefix(&prefix)
                && let Some(name) = rest.split('/').next().filter(|n| !n.is_empty())
            {
                names.insert(name.to_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || self.lock().dirs.contains(path)
    }

    fn exists(&self, path: &str) -> bool {
        self.lock().entries.contains_key(path)
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.lock();
        st.alive()?;
        let inode = *st.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            inode,
        }))
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.lock();
        st.alive()?;
        let dir = parent(path);
        if !dir.is_empty() && !st.dirs.contains(dir) {
            return Err(not_found(&format!("directory {dir}")));
        }
        st.plain_op()?;
        let inode = match st.entries.get(path) {
            Some(&i) => {
                st.inodes[i].push(Op::SetLen(0));
                i
            }
            None => {
                let i = st.new_inode(Inode::default());
                st.entries.insert(path.to_owned(), i);
                i
            }
        };
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            inode,
        }))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.plain_op()?;
        st.entries
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir(&self, dir: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.plain_op()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let prefix = format!("{dir}/");
        let occupied = st
            .entries
            .keys()
            .chain(st.dirs.iter())
            .any(|p| p.starts_with(&prefix));
        if occupied {
            return Err(io::Error::other(format!("{dir}: directory not empty")));
        }
        st.dirs.remove(dir);
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.plain_op()?;
        let State {
            entries,
            durable_entries,
            dirs,
            durable_dirs,
            ..
        } = &mut *st;
        durable_entries.retain(|p, _| parent(p) != dir);
        for (p, &i) in entries.iter() {
            if parent(p) == dir {
                durable_entries.insert(p.clone(), i);
            }
        }
        durable_dirs.retain(|d| parent(d) != dir || dirs.contains(d));
        durable_dirs.extend(dirs.iter().filter(|d| parent(d) == dir).cloned());
        Ok(())
    }

    fn describe(&self, path: &str) -> String {
        format!("sim:{path}")
    }
}

/// An open handle: it follows the file, not its name.
#[derive(Debug)]
struct SimFile {
    storage: SimStorage,
    inode: usize,
}

impl SimFile {
    /// Runs `f` on the file once the process is known to be up.
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.storage.lock();
        st.alive()?;
        f(&mut st.inodes[self.inode])
    }

    /// Runs `f` on the file as a mutating operation without partial effects.
    fn mutate(&self, f: impl FnOnce(&mut Inode)) -> io::Result<()> {
        let mut st = self.storage.lock();
        st.plain_op()?;
        f(&mut st.inodes[self.inode]);
        Ok(())
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(io::Error::other)
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|f| Ok(f.current.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|f| {
            let start = to_usize(pos)?;
            let end = start
                .checked_add(buf.len())
                .filter(|&end| end <= f.current.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
            buf.copy_from_slice(&f.current[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let pos = to_usize(pos)?;
        let mut st = self.storage.lock();
        let fault = st.op()?;
        let landed = if fault.is_some() {
            buf.len() / 2
        } else {
            buf.len()
        };
        st.inodes[self.inode].push(Op::Write {
            pos,
            data: buf[..landed].to_vec(),
        });
        match fault {
            None => Ok(()),
            Some((Fault::Crash, n)) => Err(crash_error(n)),
            Some((Fault::Fail, _)) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated full disk",
            )),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.mutate(|f| f.push(Op::SetLen(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.storage.lock();
        while st.hold_syncs {
            st.syncs_waiting += 1;
            st = self.storage.released.wait_unpoisoned(st);
            st.syncs_waiting -= 1;
        }
        drop(st);
        self.mutate(|f| {
            f.durable = f.current.clone();
            f.pending.clear();
        })
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(s: &SimStorage, path: &str, bytes: &[u8], sync: bool) -> Arc<dyn StorageFile> {
        let f = s.create(path).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
        f
    }

    /// Unsynced data and unsynced directory entries are lost only where the mode says.
    #[test]
    fn each_fixed_mode_keeps_what_it_says() {
        let s = SimStorage::new();
        s.create_dir_all("d").unwrap();
        s.sync_dir("").unwrap();
        let f = write(&s, "d/a", b"synced", true);
        s.sync_dir("d").unwrap();
        f.write_all_at(b"-tail!", 6).unwrap();
        write(&s, "d/new", b"x", true);
        let image = |mode| s.crash_image(mode);
        let durable = image(CrashMode::DurableOnly);
        assert_eq!(durable.file_names(), vec!["d/a".to_owned()]);
        assert_eq!(durable.file_bytes("d/a").unwrap(), b"synced");
        let all = image(CrashMode::AllWrites);
        assert_eq!(all.file_names(), vec!["d/a".to_owned(), "d/new".to_owned()]);
        assert_eq!(all.file_bytes("d/a").unwrap(), b"synced-tail!");
        assert_eq!(
            image(CrashMode::TornTail).file_bytes("d/a").unwrap(),
            b"synced-ta"
        );
        assert_eq!(
            image(CrashMode::ZeroTail).file_bytes("d/a").unwrap(),
            b"synced\0\0\0\0\0\0"
        );
        let garbage = image(CrashMode::GarbageTail).file_bytes("d/a").unwrap();
        assert_eq!((&garbage[..6], garbage.len()), (&b"synced"[..], 12));
        assert_ne!(&garbage[6..], b"-tail!");
        assert_eq!(
            s.file_bytes("d/a").unwrap(),
            b"synced-tail!",
            "the source is unchanged"
        );
    }

    /// A removal not yet synced in its directory is undone by a crash that keeps only
    /// durable entries, and the removed file comes back with its synced content; an
    /// open handle keeps working on the removed file.
    #[test]
    fn unsynced_removals_come_back() {
        let s = SimStorage::new();
        let f = write(&s, "a", b"old", true);
        s.sync_dir("").unwrap();
        s.remove("a").unwrap();
        f.write_all_at(b"OLD", 0).unwrap();
        write(&s, "a", b"new", true);
        assert_eq!(s.file_bytes("a").unwrap(), b"new");
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b"old"
        );
        assert_eq!(
            s.crash_image(CrashMode::AllWrites).file_bytes("a").unwrap(),
            b"new"
        );
        s.sync_dir("").unwrap();
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b"new"
        );
    }

    /// A created directory, and every file under it, survives a crash only once its
    /// parent has been synced, even when the files' own entries were synced; seeded
    /// images reach both outcomes.
    #[test]
    fn directories_are_durable_after_their_parent_is_synced() {
        let s = SimStorage::new();
        let before = s.ops();
        s.create_dir_all("d/e").unwrap();
        assert_eq!(s.ops(), before + 1, "creating a directory is an operation");
        s.create_dir_all("d/e").unwrap();
        assert_eq!(
            s.ops(),
            before + 1,
            "an existing directory is not created again"
        );
        write(&s, "d/e/f", b"x", true);
        s.sync_dir("d/e").unwrap();
        s.sync_dir("d").unwrap();
        let durable = s.crash_image(CrashMode::DurableOnly);
        assert!(!durable.is_dir("d") && !durable.is_dir("d/e"));
        assert!(durable.file_names().is_empty());
        assert_eq!(durable.list("").unwrap(), Vec::<String>::new());
        let all = s.crash_image(CrashMode::AllWrites);
        assert!(all.is_dir("d/e"));
        assert_eq!(all.file_bytes("d/e/f").unwrap(), b"x");
        let seen: BTreeSet<bool> = (0..64)
            .map(|seed| {
                let image = s.crash_image(CrashMode::Seeded(seed));
                assert_eq!(image.exists("d/e/f"), image.is_dir("d/e"));
                image.exists("d/e/f")
            })
            .collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        s.sync_dir("").unwrap();
        let durable = s.crash_image(CrashMode::DurableOnly);
        assert!(durable.is_dir("d/e"));
        assert_eq!(durable.file_bytes("d/e/f").unwrap(), b"x");
    }

    /// Only an empty directory is removed; once removed it is gone from listings
    /// and from crash images, and it can be created again.
    #[test]
    fn remove_dir_needs_an_empty_directory() {
        let s = SimStorage::new();
        s.create_dir_all("d").unwrap();
        write(&s, "d/f", b"x", true);
        s.sync_dir("d").unwrap();
        s.sync_dir("").unwrap();
        assert!(s.remove_dir("d").is_err(), "not empty");
        assert!(s.remove_dir("missing").is_err());
        s.remove("d/f").unwrap();
        s.remove_dir("d").unwrap();
        s.sync_dir("").unwrap();
        assert!(!s.is_dir("d"));
        assert_eq!(s.list("").unwrap(), Vec::<String>::new());
        assert!(!s.crash_image(CrashMode::DurableOnly).is_dir("d"));
        s.create_dir_all("d").unwrap();
        assert!(s.is_dir("d"));
    }

    /// A crash fails its operation (a write lands half), then every call, reads too.
    #[test]
    fn a_crash_tears_its_write_and_stops_everything() {
        let s = SimStorage::new();
        let f = write(&s, "a", b"0123", true);
        s.sync_dir("").unwrap();
        s.crash_at(s.ops());
        assert!(f.write_all_at(b"abcdef", 4).is_err());
        assert!(s.has_crashed());
        assert!(f.len().is_err() && s.list("").is_err() && s.open("a").is_err());
        assert!(f.sync_data().is_err());
        assert_eq!(s.file_bytes("a").unwrap(), b"0123abc");
        assert_eq!(
            s.crash_image(CrashMode::AllWrites).file_bytes("a").unwrap(),
            b"0123abc"
        );
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b"0123"
        );
    }

    /// A failed operation fails once: a write lands half and reports a full disk, a
    /// sync fails without syncing; later calls work.
    #[test]
    fn a_failure_fails_once() {
        let s = SimStorage::new();
        let f = write(&s, "a", b"", true);
        s.sync_dir("").unwrap();
        s.fail_at(s.ops());
        let e = f.write_all_at(b"abcd", 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(s.file_bytes("a").unwrap(), b"ab");
        s.fail_at(s.ops());
        assert!(f.sync_data().is_err());
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b""
        );
        f.sync_data().unwrap();
        assert!(!s.has_crashed());
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b"ab"
        );
    }

    /// Seeded images replay, keep synced data, and reach every outcome of an unsynced
    /// write and of an unsynced entry: absent, torn, zero-filled, whole.
    #[test]
    fn seeded_images_replay_and_cover_every_outcome() {
        let s = SimStorage::new();
        let f = write(&s, "a", b"base", true);
        s.sync_dir("").unwrap();
        f.write_all_at(b"WXYZ", 4).unwrap();
        write(&s, "b", b"b", true);
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let one = s.crash_image(CrashMode::Seeded(seed));
            let two = s.crash_image(CrashMode::Seeded(seed));
            assert_eq!(one.file_bytes("a"), two.file_bytes("a"));
            assert_eq!(one.file_names(), two.file_names());
            let a = one.file_bytes("a").unwrap();
            assert_eq!(&a[..4], b"base");
            let tail = a[4..].to_vec();
            assert!(
                b"WXYZ".starts_with(&tail) || tail == [0; 4],
                "{tail:?} is not an outcome of the write"
            );
            seen.insert(match tail.len() {
                0 => "absent",
                4 if tail == b"WXYZ" => "whole",
                4 => "zeros",
                _ => "torn",
            });
            seen.insert(if one.exists("b") {
                "entry kept"
            } else {
                "entry lost"
            });
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    /// A held sync waits until released.
    #[test]
    fn held_syncs_wait_for_release() {
        let s = SimStorage::new();
        let f = write(&s, "a", b"x", false);
        s.sync_dir("").unwrap();
        s.hold_syncs();
        let syncing = std::thread::spawn(move || f.sync_data());
        while s.syncs_waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b""
        );
        s.release_syncs();
        syncing.join().unwrap().unwrap();
        assert_eq!(
            s.crash_image(CrashMode::DurableOnly)
                .file_bytes("a")
                .unwrap(),
            b"x"
        );
    }
}
