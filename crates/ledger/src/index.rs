//! The block-number index: a redb database per channel at `index/<channel>.redb`,
//! reached through `korder_storage::Storage` like the block files.
//!
//! It is derived data. Blocks are durable in the block files before they are indexed,
//! so index commits are non-durable except every `index_sync_every` blocks and at the
//! end of recovery; after a crash the index is at worst behind the files and is
//! caught up from them at open. A damaged or unreadable index is deleted and rebuilt.

use std::io;
use std::sync::Arc;

use korder_storage::StorageFile;
use redb::{Builder, Database, Durability, ReadableDatabase, StorageBackend, TableDefinition};

/// number → (file suffix, offset of the record's length prefix, record length incl. prefix)
const BLOCKS: TableDefinition<u64, (u32, u64, u64)> = TableDefinition::new("block_locations");
/// "last_indexed" → highest block number indexed (entries exist for 0..=it).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_INDEXED: &str = "last_indexed";

/// Where a block's record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Suffix of the block file (`blockfile_<suffix>`).
    pub suffix: u32,
    /// Offset of the record's length prefix.
    pub offset: u64,
    /// Record length, length prefix included.
    pub len: u64,
}

/// redb's storage backend over a [`StorageFile`].
#[derive(Debug)]
struct Backend(Arc<dyn StorageFile>);

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(out, offset)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(data, offset)
    }
}

/// The open index of one channel.
#[derive(Debug)]
pub(crate) struct Index {
    db: Database,
}

impl Index {
    /// Opens (or initialises) the index held in `file`. The write transaction is
    /// also the damage check: a damaged index fails here, with an error (it is then
    /// rebuilt from the block files), rather than later, where the database may
    /// panic on pages it cannot make sense of.
    pub(crate) fn open(file: Arc<dyn StorageFile>) -> Result<Self, redb::Error> {
        let db = Builder::new().create_with_backend(Backend(file))?;
        let tx = db.begin_write()?;
        {
            tx.open_table(BLOCKS)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// Opens an existing index without writing to it.
    pub(crate) fn open_read_only(file: Arc<dyn StorageFile>) -> Result<ReadOnlyIndex, redb::Error> {
        let db = Builder::new().open_read_only_with_backend(Backend(file))?;
        Ok(ReadOnlyIndex { db })
    }

    pub(crate) fn get(&self, number: u64) -> Result<Option<Location>, redb::Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        Ok(t.get(number)?.map(|v| to_location(v.value())))
    }

    pub(crate) fn last_indexed(&self) -> Result<Option<u64>, redb::Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(LAST_INDEXED)?.map(|v| v.value()))
    }

    /// Adds consecutive entries and moves the checkpoint to the last one.
    pub(crate) fn put(
        &self,
        entries: &[(u64, Location)],
        durable: bool,
    ) -> Result<(), redb::Error> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut t = tx.open_table(BLOCKS)?;
            for (n, loc) in entries {
                t.insert(*n, (loc.suffix, loc.offset, loc.len))?;
            }
            let mut m = tx.open_table(META)?;
            m.insert(LAST_INDEXED, last.0)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops every entry and the checkpoint.
    pub(crate) fn clear(&self) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        tx.delete_table(BLOCKS)?;
        tx.delete_table(META)?;
        {
            tx.open_table(BLOCKS)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A durable commit of everything committed so far.
    pub(crate) fn persist(&self) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        tx.commit()?;
        Ok(())
    }
}

fn to_location(v: (u32, u64, u64)) -> Location {
    Location {
        suffix: v.0,
        offset: v.1,
        len: v.2,
    }
}

/// An index opened read-only (for `verify`).
pub(crate) struct ReadOnlyIndex {
    db: redb::ReadOnlyDatabase,
}

impl ReadOnlyIndex {
    pub(crate) fn last_indexed(&self) -> Result<Option<u64>, redb::Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(LAST_INDEXED)?.map(|v| v.value()))
    }

    pub(crate) fn get(&self, number: u64) -> Result<Option<Location>, redb::Error> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOCKS)?;
        Ok(t.get(number)?.map(|v| to_location(v.value())))
    }
}
