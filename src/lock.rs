//! Poison-tolerant locking, in one place. A panic in one connection's task is caught by the
//! executor and must not turn every later lock of shared state (rooms, counters, the
//! backplane queue) into a second panic: the data behind these locks stays consistent at every
//! unlock, so a poisoned guard is taken as it is.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, ignoring poison.
pub fn mutex<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes `m` shared, ignoring poison.
pub fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// Takes `m` exclusively, ignoring poison.
pub fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
