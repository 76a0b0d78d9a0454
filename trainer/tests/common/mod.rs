//! The trainer tests' own helpers (tiny in-memory models, optimizer, gradients); the
//! project-wide ones come from `couplet-testkit`.
#![allow(dead_code)]

use couplet_model::{random, DreamModel, Init, Preset};
use couplet_trainer::{AdamW, AdamWConfig};
use tch::{Device, Kind, Tensor};

/// The tiny preset over a 300-token vocabulary (mask id 299), weights Normal(0, `std`),
/// drawn from torch's generator seeded with `seed`.
pub fn tiny_model(std: f64, seed: i64) -> DreamModel {
    let mut cfg = Preset::Tiny.config(300);
    cfg.initializer_range = std;
    cfg.mask_token_id = Some(299);
    random::with_torch_seed(seed, || {
        DreamModel::new(&cfg, Device::Cpu, Kind::Float, Init::Random)
    })
}

/// AdamW over every parameter of `m`, no weight decay, clipping at 1.
pub fn adamw(m: &DreamModel, lr: f64) -> AdamW {
    let params = m.var_store().variables().into_iter().collect();
    AdamW::new(
        params,
        AdamWConfig {
            lr,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            ..Default::default()
        },
    )
}

/// Every parameter's gradient (a copy), in name order.
pub fn grads(m: &DreamModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = m
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Zeroes every defined gradient.
pub fn zero(m: &DreamModel) {
    for (_, t) in m.var_store().variables() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[allow(unused_imports)]
pub use couplet_testkit::f32_order_tolerance;
