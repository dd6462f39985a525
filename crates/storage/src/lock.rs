//! Recovering a poisoned lock.

use std::sync::{LockResult, PoisonError};

/// Takes the guard out of a poisoned lock result.
///
/// The stores change the state behind their locks only in short sections that leave it
/// consistent at every step, so a thread that panicked while holding a lock leaves
/// nothing half-done, and one panic must not make the store unusable to every other
/// thread. `mutex.lock().recover_poison()`, `rwlock.read().recover_poison()`,
/// `condvar.wait(guard).recover_poison()`.
pub trait RecoverPoison<G> {
    /// The guard, whether or not the lock was poisoned.
    fn recover_poison(self) -> G;
}

impl<G> RecoverPoison<G> for LockResult<G> {
    fn recover_poison(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A mutex poisoned by a panicking thread still hands out its (intact) value.
    #[test]
    fn a_poisoned_mutex_is_recovered() {
        let m = Arc::new(Mutex::new(7));
        let m2 = m.clone();
        let panicked = std::thread::spawn(move || {
            let _g = m2.lock().recover_poison();
            panic!("poison the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned());
        assert_eq!(*m.lock().recover_poison(), 7);
    }
}
