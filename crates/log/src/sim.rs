//! An in-memory [`Storage`] that can fail writes and simulate a crash, for tests.
//!
//! Every file keeps two images: what was written (`current`) and what the last
//! `sync_data` made durable. Directory entries are durable only after `sync_dir`.
//! A crash can be armed at the n-th mutating operation (create, write, sync, set_len,
//! sync_dir): that operation fails (a write first lands half of its bytes, a torn
//! write) and every later one fails too, as if the process had died there. Then
//! [`SimStorage::crash_image`] yields the disk a restarted process would find,
//! choosing how much of the unsynced data survived.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

/// What survives of unsynced data in a crash image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only synced data and synced directory entries survive.
    DurableOnly,
    /// Every write reached the disk, synced or not.
    AllWrites,
    /// Half of the unsynced tail of each file survives (a torn write).
    TornTail,
    /// The unsynced tail of each file is replaced by zero bytes.
    ZeroTail,
    /// The unsynced tail of each file is replaced by arbitrary bytes.
    GarbageTail,
}

impl CrashMode {
    /// Every mode, for tests that try them all.
    pub const ALL: [CrashMode; 5] = [
        CrashMode::DurableOnly,
        CrashMode::AllWrites,
        CrashMode::TornTail,
        CrashMode::ZeroTail,
        CrashMode::GarbageTail,
    ];
}

#[derive(Default, Clone)]
struct SimFileData {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<String, SimFileData>,
    durable_names: BTreeSet<String>,
    /// Files removed since the last `sync_dir` whose entry was durable: a crash that
    /// keeps only durable entries brings them back.
    unlinked: BTreeMap<String, SimFileData>,
    ops: u64,
    crash_at_op: Option<u64>,
    crashed: bool,
    failing_writes: usize,
    hold_syncs: bool,
    syncs_waiting: usize,
}

impl SimState {
    /// Counts one mutating operation; `Err` if the process is (now) crashed.
    fn op(&mut self) -> Result<(), io::Error> {
        if self.crashed {
            return Err(crashed());
        }
        let n = self.ops;
        self.ops += 1;
        if self.crash_at_op == Some(n) {
            self.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

fn missing(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// In-memory storage with fault injection and crash images.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
    /// Wakes syncs held by [`SimStorage::hold_syncs`].
    released: Arc<Condvar>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl SimStorage {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Crash at the mutating operation with index `op` (counting from the first
    /// operation ever performed, starting at 0).
    pub fn crash_at_op(&self, op: u64) {
        self.lock().crash_at_op = Some(op);
    }

    /// Whether the armed crash has happened.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The next `n` writes fail with `StorageFull` after writing half their bytes.
    pub fn fail_next_writes(&self, n: usize) {
        self.lock().failing_writes = n;
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

    /// The bytes written to `name` so far (synced or not).
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).map(|f| f.current.clone())
    }

    /// Replaces the content of `name` (as durable data), creating the file if needed.
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut st = self.lock();
        st.durable_names.insert(name.to_owned());
        st.files.insert(
            name.to_owned(),
            SimFileData {
                current: bytes.clone(),
                durable: bytes,
            },
        );
    }

    /// Names of the files in the directory.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// The disk a restarted process would see after a crash now.
    pub fn crash_image(&self, mode: CrashMode) -> SimStorage {
        let st = self.lock();
        let mut files = BTreeMap::new();
        let back = st
            .unlinked
            .iter()
            .filter(|_| mode == CrashMode::DurableOnly);
        for (name, data) in st.files.iter().chain(back) {
            if mode == CrashMode::DurableOnly && !st.durable_names.contains(name) {
                continue;
            }
            let bytes = survivor(data, mode);
            files.insert(
                name.clone(),
                SimFileData {
                    current: bytes.clone(),
                    durable: bytes,
                },
            );
        }
        let durable_names = files.keys().cloned().collect();
        SimStorage {
            state: Arc::new(Mutex::new(SimState {
                files,
                durable_names,
                ..SimState::default()
            })),
            released: Arc::new(Condvar::new()),
        }
    }
}

/// What of one file survives a crash in `mode`.
fn survivor(data: &SimFileData, mode: CrashMode) -> Vec<u8> {
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
        CrashMode::AllWrites => data.current.clone(),
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

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        if !self.lock().files.contains_key(name) {
            return Err(missing(name));
        }
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            name: name.to_owned(),
        }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.lock();
        st.op()?;
        st.files.entry(name.to_owned()).or_default().current.clear();
        drop(st);
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            name: name.to_owned(),
        }))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        st.durable_names = st.files.keys().cloned().collect();
        st.unlinked.clear();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.op()?;
        let data = st.files.remove(name).ok_or_else(|| missing(name))?;
        if st.durable_names.contains(name) {
            st.unlinked.insert(name.to_owned(), data);
        }
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

struct SimFile {
    storage: SimStorage,
    name: String,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.storage.lock();
        f(&mut st)
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|st| {
            let f = st
                .files
                .get(&self.name)
                .ok_or_else(|| missing(&self.name))?;
            Ok(f.current.len() as u64)
        })
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|st| {
            let f = st
                .files
                .get(&self.name)
                .ok_or_else(|| missing(&self.name))?;
            let start = usize::try_from(pos).map_err(io::Error::other)?;
            let end = start
                .checked_add(buf.len())
                .ok_or_else(|| io::Error::other("overflow"))?;
            if end > f.current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end",
                ));
            }
            buf.copy_from_slice(&f.current[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with(|st| {
            let crash_now = !st.crashed && st.crash_at_op == Some(st.ops);
            let fail_now = !st.crashed && !crash_now && st.failing_writes > 0;
            let result = st.op();
            if result.is_err() && !crash_now {
                return result;
            }
            let landed = if crash_now || fail_now {
                buf.len() / 2
            } else {
                buf.len()
            };
            let f = st
                .files
                .get_mut(&self.name)
                .ok_or_else(|| missing(&self.name))?;
            let start = usize::try_from(pos).map_err(io::Error::other)?;
            if f.current.len() < start + landed {
                f.current.resize(start + landed, 0);
            }
            f.current[start..start + landed].copy_from_slice(&buf[..landed]);
            if fail_now {
                st.failing_writes -= 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated full disk",
                ));
            }
            result
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.storage.lock();
        while st.hold_syncs {
            st.syncs_waiting += 1;
            st = self
                .storage
                .released
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
            st.syncs_waiting -= 1;
        }
        drop(st);
        self.with(|st| {
            st.op()?;
            let f = st
                .files
                .get_mut(&self.name)
                .ok_or_else(|| missing(&self.name))?;
            f.durable = f.current.clone();
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st| {
            st.op()?;
            let f = st
                .files
                .get_mut(&self.name)
                .ok_or_else(|| missing(&self.name))?;
            f.current
                .resize(usize::try_from(len).map_err(io::Error::other)?, 0);
            Ok(())
        })
    }
}
