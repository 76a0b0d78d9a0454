//! `couplet launch --nproc N -- train ...`: torchrun's single-node job for those without
//! torchrun. Starts N copies of this binary with the variables torchrun would set (RANK,
//! LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), waits for them, and
//! stops the rest as soon as one fails.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Processes (ranks) to start on this machine.
    #[arg(long)]
    nproc: usize,
    /// Rendezvous port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    master_port: Option<u16>,
    /// The couplet command each rank runs, after `--` (e.g. `-- train --config ...`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port for the rendezvous")?
        .local_addr()?
        .port())
}

pub fn run(args: Args) -> Result<()> {
    if args.nproc == 0 {
        usage!("--nproc must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the couplet binary")?;
    let port = match args.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    // Like torchrun: split the cores between the ranks unless the user chose.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.nproc).max(1).to_string()
    });
    let mut children: Vec<Child> = Vec::with_capacity(args.nproc);
    for rank in 0..args.nproc {
        let child = Command::new(&exe)
            .env("OMP_NUM_THREADS", &threads)
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push(child);
    }
    // Poll until all are done; the first failure stops the others.
    let mut codes: Vec<Option<i32>> = vec![None; children.len()];
    loop {
        for (rank, child) in children.iter_mut().enumerate() {
            if codes[rank].is_none() {
                if let Some(status) = child.try_wait()? {
                    codes[rank] = Some(status.code().unwrap_or(128 + 9));
                }
            }
        }
        if let Some((rank, code)) = codes
            .iter()
            .enumerate()
            .find_map(|(r, c)| c.filter(|&c| c != 0).map(|c| (r, c)))
        {
            for (r, child) in children.iter_mut().enumerate() {
                if codes[r].is_none() {
                    // SIGTERM first: a rank saves a checkpoint when it can.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                }
            }
            std::thread::sleep(Duration::from_secs(5));
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!("launch: rank {rank} exited with status {code}; stopped the others");
            std::process::exit(code);
        }
        if codes.iter().all(|c| c.is_some()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
