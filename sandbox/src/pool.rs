//! A pool of worker threads running jobs in parallel on one backend.
//!
//! The queue is bounded (submitters block instead of piling up memory), every job carries
//! its own deadlines (enforced inside the backend, so no job can hang a worker), and a
//! panic inside a job is caught and reported as that job's sandbox error — the worker
//! keeps serving. Worker threads get a large stack because wasmtime runs the guest on the
//! calling thread's stack in synchronous mode.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::job::{Job, JobResult, Limits};
use crate::Backend;

const WORKER_STACK: usize = 12 << 20;

type Task = (Job, Limits, Sender<JobResult>);

/// Throughput counters since the pool started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    /// Jobs run.
    pub jobs: u64,
    /// Tests run.
    pub tests: u64,
    /// Jobs the sandbox failed on.
    pub sandbox_failures: u64,
    /// Summed job wall time.
    pub seconds: f64,
}

impl PoolStats {
    /// Tests per second of summed wall time.
    pub fn tests_per_second(&self) -> f64 {
        self.tests as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    tests: AtomicU64,
    sandbox_failures: AtomicU64,
}

/// Runs jobs on a backend from a fixed set of worker threads (a panic in a job is caught).
pub struct SandboxPool {
    queue: Option<Sender<Task>>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    started: Instant,
    backend_name: &'static str,
}

impl SandboxPool {
    /// Starts `workers` threads (0 = available cores) with a queue of `2 × workers`.
    pub fn new(backend: Arc<dyn Backend>, workers: usize) -> std::io::Result<Self> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let (tx, rx): (Sender<Task>, Receiver<Task>) = bounded(workers * 2);
        let counters = Arc::new(Counters::default());
        let backend_name = backend.name();
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (rx, backend, counters) = (rx.clone(), backend.clone(), counters.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("sandbox-{i}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || {
                        for (job, limits, reply) in rx.iter() {
                            let start = Instant::now();
                            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                backend.run(&job, &limits)
                            }))
                            .unwrap_or_else(|panic| {
                                let msg = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_else(|| "unknown panic".into());
                                JobResult::sandbox_failure(
                                    &job.id,
                                    format!("sandbox worker panicked: {msg}"),
                                    start.elapsed().as_secs_f64(),
                                )
                            });
                            counters.jobs.fetch_add(1, Ordering::Relaxed);
                            counters
                                .tests
                                .fetch_add(result.tests.len() as u64, Ordering::Relaxed);
                            if result.sandbox_error.is_some() {
                                counters.sandbox_failures.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = reply.send(result);
                        }
                    })?,
            );
        }
        Ok(SandboxPool {
            queue: Some(tx),
            workers: handles,
            counters,
            started: Instant::now(),
            backend_name,
        })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Queues a job (blocking while the queue is full); the result arrives on the receiver.
    pub fn submit(&self, job: Job, limits: Limits) -> Receiver<JobResult> {
        let (tx, rx) = bounded(1);
        let id = job.id.clone();
        let queued = match &self.queue {
            Some(queue) => queue.send((job, limits, tx.clone())).is_ok(),
            None => false,
        };
        if !queued {
            let _ = tx.send(JobResult::sandbox_failure(
                &id,
                "the sandbox pool is shut down".into(),
                0.0,
            ));
        }
        rx
    }

    /// Runs all jobs, returning results in job order.
    pub fn run_all(&self, jobs: Vec<Job>, limits: Limits) -> Vec<JobResult> {
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        // Submit from a helper thread so a full queue cannot deadlock with collection.
        let receivers: Vec<Receiver<JobResult>> = std::thread::scope(|s| {
            let (rtx, rrx) = crossbeam_channel::unbounded();
            s.spawn(move || {
                for job in jobs {
                    let _ = rtx.send(self.submit(job, limits));
                }
            });
            rrx.iter().collect()
        });
        receivers
            .into_iter()
            .zip(ids)
            .map(|(rx, id)| {
                rx.recv().unwrap_or_else(|_| {
                    JobResult::sandbox_failure(&id, "sandbox worker vanished".into(), 0.0)
                })
            })
            .collect()
    }

    /// Totals so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            tests: self.counters.tests.load(Ordering::Relaxed),
            sandbox_failures: self.counters.sandbox_failures.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

impl Drop for SandboxPool {
    fn drop(&mut self) {
        self.queue = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}
