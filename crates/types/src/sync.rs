//! Taking a lock whose previous holder panicked.
//!
//! Where the state behind a `Mutex` or `RwLock` is valid whatever a panicking holder
//! left in it (a value replaced in one assignment, a cache, a record of the last
//! error), refusing every later caller because of the poison flag would turn one panic
//! into a cascade. These methods take the lock anyway (and a condvar wait takes it
//! back), and say so in one word at the call site instead of
//! `.lock().unwrap_or_else(PoisonError::into_inner)`.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// [`Mutex::lock`], taking the lock even when a previous holder panicked.
pub trait MutexExt<T: ?Sized> {
    /// Locks, ignoring poisoning.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], taking the lock even when a previous
/// writer panicked.
pub trait RwLockExt<T: ?Sized> {
    /// Locks for reading, ignoring poisoning.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, ignoring poisoning.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`Condvar::wait`], taking the lock back even when another holder panicked.
pub trait CondvarExt {
    /// Waits for a notification, ignoring poisoning.
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
}

impl CondvarExt for Condvar {
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// A mutex poisoned by a panicking holder is still taken, with the value the holder left.
    #[test]
    fn mutex_taken_after_a_panic() {
        let m = Mutex::new(1);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut g = m.lock_unpoisoned();
            *g = 2;
            panic!("holder panics");
        }));
        assert!(r.is_err());
        assert!(m.is_poisoned());
        assert_eq!(*m.lock_unpoisoned(), 2);
    }

    /// An RwLock poisoned by a panicking writer is still readable and writable.
    #[test]
    fn rwlock_taken_after_a_panic() {
        let l = RwLock::new(1);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut g = l.write_unpoisoned();
            *g = 2;
            panic!("writer panics");
        }));
        assert!(r.is_err());
        assert!(l.is_poisoned());
        assert_eq!(*l.read_unpoisoned(), 2);
        *l.write_unpoisoned() = 3;
        assert_eq!(*l.read_unpoisoned(), 3);
    }

    /// A condvar wait returns the guard even when the mutex was poisoned meanwhile.
    #[test]
    fn condvar_wait_after_a_panic() {
        use std::sync::Arc;
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let other = pair.clone();
        let mut ready = pair.0.lock_unpoisoned();
        let waker = std::thread::spawn(move || {
            let mut g = other.0.lock_unpoisoned();
            *g = true;
            other.1.notify_all();
            panic!("holder panics");
        });
        while !*ready {
            ready = pair.1.wait_unpoisoned(ready);
        }
        drop(ready);
        assert!(waker.join().is_err());
        assert!(pair.0.is_poisoned());
        assert!(*pair.0.lock_unpoisoned());
    }
}
