//! An in-memory [`Storage`] that simulates crashes, for tests.
//!
//! Every mutating call (`write_at`, `set_len`, `sync`, `sync_dir`) is a numbered
//! *fault point*. A test can make fault point `k` crash the storage (that call and
//! every later one fail) or fail just once. [`SimStorage::crash`] then builds the disk
//! as a machine would find it after power loss: each file keeps its content as of its
//! last `sync`, plus an in-order prefix of the operations issued since, the last of
//! which may be torn (a prefix of its bytes) or zero-filled (the length grew, the
//! bytes did not arrive). A file created since its directory was last synced may be
//! gone entirely.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// Content as of the last sync.
    durable: Vec<u8>,
    /// Content as the running process sees it.
    current: Vec<u8>,
    /// Operations since the last sync, in order.
    pending: Vec<Op>,
    /// Whether the file's directory entry is durable.
    entry_durable: bool,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<String, SimFile>,
    dirs: BTreeSet<String>,
    fault_points: u64,
    crash_at: Option<u64>,
    fail_at: Option<u64>,
    crashed: bool,
}

/// Crash-simulating in-memory storage. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

/// A small deterministic generator (splitmix64), so crash outcomes replay from a seed.
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

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash: storage is down")
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panicking test thread must not hide the disk from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of fault points passed so far.
    pub fn fault_points(&self) -> u64 {
        self.lock().fault_points
    }

    /// Crash at fault point `k` (0-based, counted from the start of this storage):
    /// that call fails and so does every later one.
    pub fn crash_at(&self, k: u64) {
        self.lock().crash_at = Some(k);
    }

    /// Fail fault point `k` once; later calls work again.
    pub fn fail_at(&self, k: u64) {
        self.lock().fail_at = Some(k);
    }

    /// Whether the storage has crashed.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Stops the running "process": every later call fails.
    pub fn halt(&self) {
        self.lock().crashed = true;
    }

    /// The disk after a power loss now, with the outcome of unsynced operations drawn
    /// from `rng`. The returned storage is fresh (no crash scheduled); this one stays
    /// down.
    pub fn crash(&self, rng: &mut SimRng) -> SimStorage {
        let mut st = self.lock();
        st.crashed = true;
        let mut files = BTreeMap::new();
        for (path, f) in &st.files {
            if !f.entry_durable && rng.below(2) == 0 {
                continue;
            }
            let mut image = f.durable.clone();
            let keep = rng.below(f.pending.len() as u64 + 1) as usize;
            for op in &f.pending[..keep] {
                apply(&mut image, op);
            }
            if let Some(Op::Write { offset, data }) = f.pending.get(keep) {
                match rng.below(3) {
                    0 => {}
                    1 => {
                        let cut = rng.below(data.len() as u64 + 1) as usize;
                        apply(
                            &mut image,
                            &Op::Write {
                                offset: *offset,
                                data: data[..cut].to_vec(),
                            },
                        );
                    }
                    _ => {
                        let end = *offset as usize + data.len();
                        if image.len() < end {
                            image.resize(end, 0);
                        }
                    }
                }
            }
            files.insert(
                path.clone(),
                SimFile {
                    durable: image.clone(),
                    current: image,
                    pending: Vec::new(),
                    entry_durable: true,
                },
            );
        }
        SimStorage {
            state: Arc::new(Mutex::new(SimState {
                files,
                dirs: st.dirs.clone(),
                ..SimState::default()
            })),
        }
    }

    /// A copy of a file's current content (for tests that damage files on purpose).
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|f| f.current.clone())
    }

    /// Replaces a file's content, durably.
    pub fn write_file(&self, path: &str, content: Vec<u8>) {
        let mut st = self.lock();
        let dir = parent(path).to_owned();
        st.dirs.insert(dir);
        st.files.insert(
            path.to_owned(),
            SimFile {
                durable: content.clone(),
                current: content,
                pending: Vec::new(),
                entry_durable: true,
            },
        );
    }

    /// Counts a fault point; errors if it is the scheduled crash or failure.
    fn fault_point(st: &mut SimState) -> io::Result<()> {
        if st.crashed {
            return Err(crashed_err());
        }
        let k = st.fault_points;
        st.fault_points += 1;
        if st.crash_at == Some(k) {
            st.crashed = true;
            return Err(io::Error::other(format!(
                "simulated crash at fault point {k}"
            )));
        }
        if st.fail_at == Some(k) {
            st.fail_at = None;
            return Err(io::Error::other(format!(
                "simulated failure at fault point {k}"
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimHandle {
    storage: SimStorage,
    path: String,
}

impl SimHandle {
    fn with<R>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut SimFile) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut st = self.storage.lock();
        if mutating {
            SimStorage::fault_point(&mut st)?;
        } else if st.crashed {
            return Err(crashed_err());
        }
        let file = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, self.path.clone()))?;
        f(file)
    }
}

impl StorageFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |f| Ok(f.current.len() as u64))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(false, |f| {
            let end = offset as usize + buf.len();
            if end > f.current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read beyond end of file",
                ));
            }
            buf.copy_from_slice(&f.current[offset as usize..end]);
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(true, |f| {
            let op = Op::Write {
                offset,
                data: data.to_vec(),
            };
            apply(&mut f.current, &op);
            f.pending.push(op);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |f| {
            let op = Op::SetLen(len);
            apply(&mut f.current, &op);
            f.pending.push(op);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(true, |f| {
            f.durable = f.current.clone();
            f.pending.clear();
            Ok(())
        })
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &str) -> io::Result<()> {
        let mut st = self.lock();
        if st.crashed {
            return Err(crashed_err());
        }
        let mut d = dir;
        while !d.is_empty() {
            st.dirs.insert(d.to_owned());
            d = parent(d);
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let st = self.lock();
        if st.crashed {
            return Err(crashed_err());
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names = BTreeSet::new();
        for p in st.files.keys().chain(st.dirs.iter()) {
            if let Some(rest) = p.strip_prefix(&prefix)
                && let Some(name) = rest.split('/').next().filter(|n| !n.is_empty())
            {
                names.insert(name.to_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn is_dir(&self, path: &str) -> bool {
        self.lock().dirs.contains(path)
    }

    fn exists(&self, path: &str) -> bool {
        self.lock().files.contains_key(path)
    }

    fn open(&self, path: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        {
            let mut st = self.lock();
            if st.crashed {
                return Err(crashed_err());
            }
            if !st.files.contains_key(path) {
                if !create {
                    return Err(io::Error::new(io::ErrorKind::NotFound, path.to_owned()));
                }
                if !st.dirs.contains(parent(path)) && !parent(path).is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no directory for {path}"),
                    ));
                }
                st.files.insert(path.to_owned(), SimFile::default());
            }
        }
        Ok(Arc::new(SimHandle {
            storage: self.clone(),
            path: path.to_owned(),
        }))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut st = self.lock();
        SimStorage::fault_point(&mut st)?;
        st.files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.to_owned()))
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut st = self.lock();
        SimStorage::fault_point(&mut st)?;
        for (p, f) in st.files.iter_mut() {
            if parent(p) == dir {
                f.entry_durable = true;
            }
        }
        Ok(())
    }
}
