//! Collectives on Gloo with two ranks (threads of this process, each with its own group),
//! and rendezvous failures that must be clear errors within the timeout.

use std::time::{Duration, Instant};

use couplet_dist::{Backend, ProcessGroup, Rendezvous};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rendezvous(rank: usize, world: usize, port: u16) -> Rendezvous {
    Rendezvous {
        rank,
        world_size: world,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        host_store: rank == 0,
    }
}

#[test]
fn two_ranks_reduce_broadcast_gather() {
    let port = free_port();
    let results: Vec<(Vec<f32>, Vec<f32>, Vec<Vec<u8>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                s.spawn(move || {
                    let pg = ProcessGroup::new(
                        Backend::Gloo,
                        &rendezvous(rank, 2, port),
                        Duration::from_secs(30),
                    )
                    .unwrap();
                    let mut t = Tensor::from_slice(&[rank as f32 + 1.0, 10.0 * rank as f32]);
                    pg.all_reduce_sum(&mut t).unwrap();
                    let sum = Vec::<f32>::try_from(&t).unwrap();
                    let mut b =
                        Tensor::full([3], rank as f64 + 5.0, (Kind::Float, tch::Device::Cpu));
                    pg.broadcast(&mut b, 1).unwrap();
                    let bcast = Vec::<f32>::try_from(&b).unwrap();
                    // Reduce into rank 1 (ZeRO-2's gradient path), bf16 as well as f32.
                    let mut r = Tensor::from_slice(&[rank as f32 + 1.0, 0.5]);
                    pg.reduce_sum(&mut r, 1).unwrap();
                    let mut h = Tensor::from_slice(&[rank as f32 + 1.0]).to_kind(Kind::BFloat16);
                    pg.reduce_sum(&mut h, 1).unwrap();
                    if rank == 1 {
                        assert_eq!(Vec::<f32>::try_from(&r).unwrap(), vec![3.0, 1.0]);
                        assert_eq!(h.double_value(&[0]), 3.0);
                    }
                    let bytes = pg
                        .all_gather_bytes(&vec![b'a' + rank as u8; 3 * rank + 1])
                        .unwrap();
                    pg.barrier().unwrap();
                    (sum, bcast, bytes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (sum, bcast, bytes) in &results {
        assert_eq!(sum, &vec![3.0, 10.0]);
        assert_eq!(bcast, &vec![6.0, 6.0, 6.0]);
        assert_eq!(bytes, &vec![b"a".to_vec(), b"bbbb".to_vec()]);
    }
}

#[test]
fn a_rank_that_never_arrives_is_a_clear_error() {
    let port = free_port();
    let started = Instant::now();
    let err = ProcessGroup::new(
        Backend::Gloo,
        &rendezvous(0, 2, port),
        Duration::from_secs(3),
    )
    .err()
    .expect("rank 1 never came");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port} as rank 0 of 2")),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = ProcessGroup::new(
        Backend::Gloo,
        &rendezvous(0, 1, port),
        Duration::from_secs(3),
    )
    .err()
    .expect("the port is taken");
    assert!(err.to_string().contains(&format!(":{port}")), "{err}");
}

/// With the `nccl` feature: on a GPU machine a one-rank NCCL group all-reduces a CUDA
/// tensor; without GPUs, joining is a clear error rather than a crash.
#[cfg(feature = "nccl")]
#[test]
fn nccl_world_of_one() {
    let rv = rendezvous(0, 1, free_port());
    match ProcessGroup::new(Backend::Nccl, &rv, Duration::from_secs(30)) {
        Ok(pg) => {
            let mut t = Tensor::ones([4], (Kind::Float, pg.device()));
            pg.all_reduce_sum(&mut t).unwrap();
            assert_eq!(t.sum(Kind::Float).double_value(&[]), 4.0);
        }
        Err(e) => {
            assert!(
                !tch::Cuda::is_available(),
                "NCCL failed with a GPU present: {e}"
            );
            assert!(e.to_string().contains("GPU"), "{e}");
        }
    }
}
