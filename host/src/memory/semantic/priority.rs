//! [`ForegroundFirst`]: foreground embeddings (a recall or a note someone is
//! waiting on) never queue behind background ones (reindexing, bulk
//! imports).
//!
//! Foreground work takes no lock: it counts itself in and out. Background
//! work runs one job at a time and, before each of its small chunks, waits
//! until no foreground work is in flight. A foreground call that arrives
//! while a background chunk runs shares the cores with that one chunk only,
//! so its delay is bounded by one chunk's time, not by the whole job.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The scheduling state of one embedder.
#[derive(Debug, Default)]
pub struct ForegroundFirst {
    /// Foreground calls in flight.
    foreground: Mutex<usize>,
    /// Signalled when `foreground` drops to zero.
    idle: Condvar,
    /// Held by the one background job that runs.
    background: Mutex<()>,
}

/// Counts a foreground call in while alive.
#[derive(Debug)]
pub struct ForegroundTurn<'a>(&'a ForegroundFirst);

impl Drop for ForegroundTurn<'_> {
    fn drop(&mut self) {
        let mut n = lock(&self.0.foreground);
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// The one background job allowed to run; see [`BackgroundTurn::yield_to_foreground`].
#[derive(Debug)]
pub struct BackgroundTurn<'a> {
    gate: &'a ForegroundFirst,
    _job: MutexGuard<'a, ()>,
}

impl BackgroundTurn<'_> {
    /// Waits until no foreground call is in flight; call it before each chunk.
    pub fn yield_to_foreground(&self) {
        let n = lock(&self.gate.foreground);
        drop(self.gate.idle.wait_while(n, |n| *n > 0).unwrap_or_else(PoisonError::into_inner));
    }
}

impl ForegroundFirst {
    /// Marks a foreground call; never waits.
    pub fn foreground(&self) -> ForegroundTurn<'_> {
        *lock(&self.foreground) += 1;
        ForegroundTurn(self)
    }

    /// Waits for other background jobs to finish, then starts one.
    pub fn background(&self) -> BackgroundTurn<'_> {
        BackgroundTurn { gate: self, _job: lock(&self.background) }
    }

    /// Foreground calls in flight (tests).
    pub fn foreground_in_flight(&self) -> usize {
        *lock(&self.foreground)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn background_chunks_wait_for_foreground_calls_and_foreground_never_waits() {
        let gate = Arc::new(ForegroundFirst::default());
        let fg = gate.foreground();
        let ran = Arc::new(AtomicBool::new(false));
        let (g, r) = (gate.clone(), ran.clone());
        let bg = std::thread::spawn(move || {
            let turn = g.background();
            turn.yield_to_foreground();
            r.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!ran.load(Ordering::SeqCst), "the background chunk waited");
        // A second foreground call does not wait for the background job.
        drop(gate.foreground());
        assert_eq!(gate.foreground_in_flight(), 1);
        drop(fg);
        bg.join().unwrap();
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(gate.foreground_in_flight(), 0);
    }
}
