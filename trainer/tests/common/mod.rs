//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use couplet_model::DreamModel;
use tch::Tensor;

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
