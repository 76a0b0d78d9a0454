//! Data-parallel communication on PyTorch's own c10d engine: Gloo on CPUs, NCCL on GPUs
//! (the `nccl` feature), through a small C++ shim compiled against the libtorch headers
//! (`csrc/c10d_shim.cpp`). No home-made protocol: the store, the rendezvous and the
//! collectives are PyTorch's, so torchrun, SLURM wrappers and NCCL tuning work as usual.
//!
//! Every rank must issue the same collectives in the same order. Each call blocks until
//! the collective is done or the group's timeout passes; a missing or dead peer becomes an
//! [`DistError`], never a crash.
//!
//! Not for: deciding what to communicate (the trainer does) or launching processes
//! (`couplet launch` / torchrun).
#![deny(missing_docs)]

use std::ffi::{c_char, c_int, c_long, CStr, CString};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn couplet_dist_new(
        backend: c_int,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        host_store: c_int,
        timeout_ms: c_long,
        err: *mut *mut c_char,
    ) -> *mut RawGroup;
    fn couplet_dist_free(g: *mut RawGroup);
    fn couplet_dist_free_error(err: *mut c_char);
    fn couplet_dist_all_reduce(
        g: *mut RawGroup,
        t: *mut torch_sys::C_tensor,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn couplet_dist_broadcast(
        g: *mut RawGroup,
        t: *mut torch_sys::C_tensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn couplet_dist_reduce(
        g: *mut RawGroup,
        t: *mut torch_sys::C_tensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn couplet_dist_all_gather(
        g: *mut RawGroup,
        output: *mut torch_sys::C_tensor,
        input: *mut torch_sys::C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
    fn couplet_dist_free_grad(t: *mut torch_sys::C_tensor);
    fn couplet_dist_barrier(g: *mut RawGroup, err: *mut *mut c_char) -> c_int;
}

/// Drops `t`'s accumulated `.grad()` (it becomes undefined and its memory is released).
/// ZeRO-2 uses it once a gradient has been reduced into its owner's shard.
pub fn free_grad(t: &Tensor) {
    // SAFETY: `t` is a live tensor; resetting its grad only releases a reference.
    unsafe { couplet_dist_free_grad(t.as_ptr() as *mut torch_sys::C_tensor) }
}

/// Why a process group or a collective failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The rendezvous or the group could not be set up.
    #[error("distributed setup: {0}")]
    Setup(String),
    /// A collective failed (a peer died, a timeout).
    #[error("{op}: {message}")]
    Collective {
        /// The collective.
        op: &'static str,
        /// c10d's message.
        message: String,
    },
}

/// Which communication engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors.
    Gloo,
    /// CUDA tensors (one GPU per rank, `cuda:LOCAL_RANK`).
    Nccl,
}

impl Backend {
    /// The engine called `name` (`gloo` or `nccl`).
    pub fn parse(name: &str) -> Option<Backend> {
        match name {
            "gloo" => Some(Backend::Gloo),
            "nccl" => Some(Backend::Nccl),
            _ => None,
        }
    }
}

/// Where and who: what torchrun (or a SLURM wrapper) puts in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// This process's rank (`RANK`).
    pub rank: usize,
    /// Ranks in the job (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this host (`LOCAL_RANK`).
    pub local_rank: usize,
    /// Host of the TCP store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the TCP store (`MASTER_PORT`).
    pub master_port: u16,
    /// Rank 0 hosts the TCP store unless an agent already does
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`, set by torchrun).
    pub host_store: bool,
}

impl Rendezvous {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (default: RANK), `MASTER_ADDR` (default
    /// 127.0.0.1), `MASTER_PORT` (default 29500) and `TORCHELASTIC_USE_AGENT_STORE`;
    /// `None` when `WORLD_SIZE` is unset (a single-process run).
    pub fn from_env() -> Result<Option<Rendezvous>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Rendezvous::from_env`] over any key lookup (testable).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Rendezvous>, DistError> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |key: &str, value: String| -> Result<usize, DistError> {
            value
                .trim()
                .parse()
                .map_err(|_| DistError::Setup(format!("{key}={value:?} is not a number")))
        };
        let world_size = num("WORLD_SIZE", world)?;
        let rank = num(
            "RANK",
            get("RANK")
                .ok_or_else(|| DistError::Setup("WORLD_SIZE is set but RANK is not".into()))?,
        )?;
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", v)?,
            None => rank,
        };
        if world_size == 0 || rank >= world_size {
            return Err(DistError::Setup(format!(
                "RANK={rank} must be below WORLD_SIZE={world_size}"
            )));
        }
        let master_port = match get("MASTER_PORT") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| DistError::Setup(format!("MASTER_PORT={v:?} is not a port")))?,
            None => 29500,
        };
        let agent =
            get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Some(Rendezvous {
            rank,
            world_size,
            local_rank,
            master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            host_store: rank == 0 && !agent,
        }))
    }
}

/// A process group: this rank's handle on the collectives.
pub struct ProcessGroup {
    raw: *mut RawGroup,
    /// This process's rank.
    pub rank: usize,
    /// Ranks in the group.
    pub world_size: usize,
    /// Rank on this host (the GPU index under NCCL).
    pub local_rank: usize,
    /// The engine.
    pub backend: Backend,
}

// SAFETY: c10d process groups are safe to use from any thread; we never share one handle
// between threads concurrently (every method takes &self but collectives are issued in
// program order by the one training thread).
unsafe impl Send for ProcessGroup {}

fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'ed string, freed right after.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { couplet_dist_free_error(err) };
    message
}

impl ProcessGroup {
    /// Joins the group described by `rv`; fails within `timeout` when peers do not arrive.
    pub fn new(backend: Backend, rv: &Rendezvous, timeout: Duration) -> Result<Self, DistError> {
        let host = CString::new(rv.master_addr.clone())
            .map_err(|_| DistError::Setup("MASTER_ADDR contains a NUL byte".into()))?;
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C string, plain integers, err is an out-pointer.
        let raw = unsafe {
            couplet_dist_new(
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                host.as_ptr(),
                rv.master_port as c_int,
                rv.rank as c_int,
                rv.world_size as c_int,
                rv.host_store as c_int,
                timeout.as_millis().min(i64::MAX as u128) as c_long,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(DistError::Setup(format!(
                "joining {}:{} as rank {} of {}: {}",
                rv.master_addr,
                rv.master_port,
                rv.rank,
                rv.world_size,
                take_error(err)
            )));
        }
        Ok(ProcessGroup {
            raw,
            rank: rv.rank,
            world_size: rv.world_size,
            local_rank: rv.local_rank,
            backend,
        })
    }

    /// The device this rank computes on: CPU for Gloo, `cuda:LOCAL_RANK` for NCCL.
    pub fn device(&self) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.local_rank),
        }
    }

    fn check(&self, op: &'static str, code: c_int, err: *mut c_char) -> Result<(), DistError> {
        if code == 0 {
            Ok(())
        } else {
            Err(DistError::Collective {
                op,
                message: take_error(err),
            })
        }
    }

    /// Sums `t` over ranks, in place.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: t is a live tensor; the shim only reads the at::Tensor handle.
        let code = unsafe { couplet_dist_all_reduce(self.raw, t.as_mut_ptr(), 0, &mut err) };
        self.check("all_reduce", code, err)
    }

    /// Averages `t` over ranks, in place (sum, then divide: Gloo has no AVG).
    pub fn all_reduce_mean(&self, t: &mut Tensor) -> Result<(), DistError> {
        self.all_reduce_sum(t)?;
        let _ = t.g_div_scalar_(self.world_size as f64);
        Ok(())
    }

    /// Element-wise max over ranks, in place.
    pub fn all_reduce_max(&self, t: &mut Tensor) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let code = unsafe { couplet_dist_all_reduce(self.raw, t.as_mut_ptr(), 1, &mut err) };
        self.check("all_reduce", code, err)
    }

    /// Copies rank `root`'s `t` into every rank's `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let code =
            unsafe { couplet_dist_broadcast(self.raw, t.as_mut_ptr(), root as c_int, &mut err) };
        self.check("broadcast", code, err)
    }

    /// Sums `t` over ranks into rank `root`'s `t`; on the other ranks `t` is left
    /// unspecified (ZeRO-2's gradient reduction into the owner of a bucket).
    pub fn reduce_sum(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let code =
            unsafe { couplet_dist_reduce(self.raw, t.as_mut_ptr(), root as c_int, &mut err) };
        self.check("reduce", code, err)
    }

    /// `[world, ...]`: every rank's `t` (same shape and kind on every rank).
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let mut shape = vec![self.world_size as i64];
        shape.extend(t.size());
        let mut out = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
        let mut input = t.contiguous();
        let mut err = std::ptr::null_mut();
        // SAFETY: both tensors are live for the call.
        let code = unsafe {
            couplet_dist_all_gather(self.raw, out.as_mut_ptr(), input.as_mut_ptr(), &mut err)
        };
        self.check("all_gather", code, err)?;
        Ok(out)
    }

    /// Every rank's byte string (any length), in rank order: sizes first, then the padded
    /// bytes. How rewards, completions and metrics travel.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let device = self.device();
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(device);
        let lens = Vec::<i64>::try_from(self.all_gather(&len)?.view([-1]).to_device(Device::Cpu))
            .map_err(|e| DistError::Collective {
            op: "all_gather",
            message: e.to_string(),
        })?;
        let max = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes.to_vec();
        padded.resize(max as usize, 0);
        let data = Tensor::from_slice(&padded)
            .to_kind(Kind::Uint8)
            .to_device(device);
        let all = self.all_gather(&data)?.to_device(Device::Cpu);
        let flat = Vec::<u8>::try_from(all.view([-1])).map_err(|e| DistError::Collective {
            op: "all_gather",
            message: e.to_string(),
        })?;
        Ok(lens
            .iter()
            .enumerate()
            .map(|(r, &n)| flat[r * max as usize..r * max as usize + n as usize].to_vec())
            .collect())
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let code = unsafe { couplet_dist_barrier(self.raw, &mut err) };
        self.check("barrier", code, err)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: raw came from couplet_dist_new and is freed once.
        unsafe { couplet_dist_free(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn rendezvous_from_torchrun_variables() {
        assert_eq!(Rendezvous::from_lookup(env(&[])).unwrap(), None);
        let rv = Rendezvous::from_lookup(env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "node1"),
            ("MASTER_PORT", "1234"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                rv.rank,
                rv.world_size,
                rv.local_rank,
                rv.master_port,
                rv.host_store
            ),
            (2, 4, 0, 1234, false)
        );
        let agent = Rendezvous::from_lookup(env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]))
        .unwrap()
        .unwrap();
        assert!(!agent.host_store, "torchrun's agent hosts the store");
        let bad = Rendezvous::from_lookup(env(&[("WORLD_SIZE", "2"), ("RANK", "2")]));
        assert!(bad.unwrap_err().to_string().contains("RANK=2"));
        let bad = Rendezvous::from_lookup(env(&[("WORLD_SIZE", "two"), ("RANK", "0")]));
        assert!(bad.unwrap_err().to_string().contains("WORLD_SIZE"));
    }
}
