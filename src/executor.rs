//! A small multi-threaded executor on `async-task` whose run queue never allocates once warm.
//!
//! `async-executor` pushes every wake-up into an unbounded `ConcurrentQueue`, which allocates
//! a block every 31 pushes: with one wake-up per delivery that is the only allocation left on
//! the fan-out path. Here the run queue is a `VecDeque` behind a mutex whose capacity is kept,
//! so steady-state scheduling allocates nothing. Spawning allocates the task, once per
//! connection.
//!
//! Workers run inside `async_io::block_on`, so an idle worker drives the I/O reactor itself.
//! A worker that finds the queue empty registers its waker as a sleeper under the same lock
//! as the queue, so a push either sees the sleeper or the worker sees the push: no lost
//! wake-up. After [`BATCH`] tasks a worker yields to its `block_on` so that timers and I/O are
//! polled even under load.

use async_task::{Runnable, Task};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Tasks a worker runs before letting its reactor look at I/O and timers. Also what counts
/// as busy ([`Executor::runnable`]): more tasks waiting than one worker's batch.
pub const BATCH: usize = 64;

/// Cheap to clone; every clone schedules onto the same queue.
#[derive(Debug, Clone, Default)]
pub struct Executor {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// The run queue's length, kept beside it for readers that must not take its lock.
    runnable: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Runnable>,
    /// Idle workers: (worker id, waker). At most one entry per worker.
    sleepers: Vec<(usize, Waker)>,
    next_worker: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock::mutex(&self.state)
    }

    fn push(&self, r: Runnable) {
        let mut s = self.lock();
        s.queue.push_back(r);
        self.runnable.store(s.queue.len(), Relaxed);
        let sleeper = s.sleepers.pop();
        drop(s);
        if let Some((_, w)) = sleeper {
            w.wake();
        }
    }
}

impl Executor {
    /// An executor with no workers yet; see [`Executor::run`].
    pub fn new() -> Executor {
        Executor::default()
    }

    /// How many tasks wait to run, kept up to date by every push and pop (the hub reads it
    /// to see whether the machine is busy).
    pub fn runnable(&self) -> Arc<AtomicUsize> {
        self.shared.runnable.clone()
    }

    /// Spawns a task. Drop the returned [`Task`] to cancel it, or `detach()` it.
    pub fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        let shared = self.shared.clone();
        let (runnable, task) = async_task::spawn(future, move |r| shared.push(r));
        runnable.schedule();
        task
    }

    /// Runs tasks on this thread until `until` completes, and returns its output. Call it
    /// from as many threads as should work. `until` is polled at every wake-up of the worker,
    /// so it should be cheap to poll (a [`Task`] or a channel): a future doing I/O would make
    /// a syscall each time (spawn it, and pass its `Task`).
    pub fn run<T>(&self, until: impl Future<Output = T>) -> T {
        let id = {
            let mut s = self.shared.lock();
            s.next_worker += 1;
            s.next_worker
        };
        let mut until = std::pin::pin!(until);
        async_io::block_on(std::future::poll_fn(|cx| {
            if let Poll::Ready(t) = until.as_mut().poll(cx) {
                let mut s = self.shared.lock();
                s.sleepers.retain(|(w, _)| *w != id);
                return Poll::Ready(t);
            }
            for _ in 0..BATCH {
                let next = {
                    let mut s = self.shared.lock();
                    match s.queue.pop_front() {
                        Some(r) => {
                            self.shared.runnable.store(s.queue.len(), Relaxed);
                            Some(r)
                        }
                        None => {
                            match s.sleepers.iter_mut().find(|(w, _)| *w == id) {
                                Some((_, w)) if w.will_wake(cx.waker()) => {}
                                Some((_, w)) => *w = cx.waker().clone(),
                                None => s.sleepers.push((id, cx.waker().clone())),
                            }
                            None
                        }
                    }
                };
                let Some(r) = next else { return Poll::Pending };
                // A panic ends only its own task (whose drop runs its guards: room membership,
                // connection counts); the worker and every other connection go on.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.run())).is_err() {
                    crate::error!("task_panicked", worker = id);
                }
            }
            // Busy: come back at once, after the reactor had a look.
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_tasks_on_several_threads_and_returns() {
        let ex = Executor::new();
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (ex, rx) = (ex.clone(), stop_rx.clone());
                std::thread::spawn(move || ex.run(async move { rx.recv().await.ok() }))
            })
            .collect();
        let count = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<Task<usize>> = (0..1000)
            .map(|i| {
                let count = count.clone();
                ex.spawn(async move {
                    futures_lite::future::yield_now().await;
                    count.fetch_add(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        let sum: usize = ex.run(async {
            let mut sum = 0;
            for t in tasks {
                sum += t.await;
            }
            sum
        });
        assert_eq!(sum, (0..1000).sum());
        assert_eq!(count.load(Ordering::SeqCst), 1000);
        drop(stop_tx);
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn a_panicking_task_does_not_take_the_worker_down() {
        let ex = Executor::new();
        ex.spawn(async { panic!("boom (expected by this test)") })
            .detach();
        let t = ex.spawn(async { 5 });
        assert_eq!(ex.run(t), 5);
    }

    #[test]
    fn timers_and_io_wake_tasks() {
        let ex = Executor::new();
        let t = ex.spawn(async {
            async_io::Timer::after(std::time::Duration::from_millis(20)).await;
            7
        });
        assert_eq!(ex.run(t), 7);
    }
}
