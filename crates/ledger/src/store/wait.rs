//! Waiting for a height: threads wait on the tip's condvar, tasks on a watch of the
//! height. Both wake on every publish and on close.

use std::sync::atomic::{AtomicBool, Ordering};

use korder_types::sync::{CondvarExt, MutexExt};

use super::{BlockStore, Inner};
use crate::error::LedgerError;

impl BlockStore {
    /// Waits (async, holding no lock across the await) until the height is at least
    /// `height`; returns the height then. Fails with `Closed` when the store closes.
    /// Cancel by dropping the future.
    pub async fn wait_for_height(&self, height: u64) -> Result<u64, LedgerError> {
        wait_async(&self.inner, height, None).await
    }

    /// Blocks the thread until the height is at least `height` or the store closes.
    pub fn wait_for_height_blocking(&self, height: u64) -> Result<u64, LedgerError> {
        wait_blocking(&self.inner, height, None)
    }

    /// Wakes every waiter, blocking and async, to re-check its condition.
    pub(crate) fn notify_all(&self) {
        let _t = self.inner.tip.lock_unpoisoned();
        self.inner.cond.notify_all();
        drop(_t);
        self.inner.watch.send_modify(|_| {});
    }

    /// Blocks until `pred` holds for the height, the store closes, or `stop()` is true
    /// (checked after every wake-up; whoever makes it true must call `notify_all`).
    pub(crate) fn wait_until(
        &self,
        height: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<u64>, LedgerError> {
        let mut t = self.inner.tip.lock_unpoisoned();
        loop {
            if t.height >= height {
                return Ok(Some(t.height));
            }
            if t.closed {
                return Err(LedgerError::Closed);
            }
            if stop() {
                return Ok(None);
            }
            t = self.inner.cond.wait_unpoisoned(t);
        }
    }
}

pub(super) fn wait_blocking(
    inner: &Inner,
    height: u64,
    closed: Option<&AtomicBool>,
) -> Result<u64, LedgerError> {
    let mut t = inner.tip.lock_unpoisoned();
    loop {
        if t.height >= height {
            return Ok(t.height);
        }
        if t.closed || closed.is_some_and(|c| c.load(Ordering::Acquire)) {
            return Err(LedgerError::Closed);
        }
        t = inner.cond.wait_unpoisoned(t);
    }
}

pub(super) async fn wait_async(
    inner: &Inner,
    height: u64,
    closed: Option<&AtomicBool>,
) -> Result<u64, LedgerError> {
    let mut rx = inner.watch.subscribe();
    loop {
        {
            let w = rx.borrow_and_update();
            if w.height >= height {
                return Ok(w.height);
            }
            if w.closed || closed.is_some_and(|c| c.load(Ordering::Acquire)) {
                return Err(LedgerError::Closed);
            }
        }
        rx.changed().await.map_err(|_| LedgerError::Closed)?;
    }
}
