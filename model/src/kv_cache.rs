//! Keys and values kept between decoding steps, and the cache-aware forward passes.
//!
//! A diffusion decoder runs the model once per step over `prompt ++ canvas`. Between two
//! steps only a few tokens change, so most layers' keys and values barely move (Fast-dLLM,
//! dKV-Cache). [`DreamModel::forward_refresh`] is the ordinary full forward that also keeps
//! every layer's rotated keys and values; [`DreamModel::forward_cached`] then recomputes
//! only the positions a decoder names (`compute`), writes their fresh keys and values into
//! the cache, and lets those queries attend to every position through the cache. Which
//! positions to recompute, and when to refresh, is the decoder's policy; this module only
//! guarantees that
//! * a refresh is bitwise the uncached forward (the same ops, recording as a side effect);
//! * a cached step whose inputs did not change since the refresh equals the full forward
//!   restricted to its queries, up to f32 summation order;
//! * left padding stays hidden: the key mask and position ids of the refresh are reused.

use tch::{Device, Kind, Tensor};

use crate::dream::DreamModel;

/// Every layer's keys and values for one batch of sequences, as of the last refresh plus
/// whatever cached steps recomputed since.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// `[B, L]` rotary position ids of the refresh (left padding accounted for).
    position_ids: Tensor,
    /// `[B, 1, 1, L]` keys that may be attended to; `None` when nothing is padded.
    key_mask: Option<Tensor>,
}

impl KvCache {
    /// A cache that holds nothing: what a model without keys and values (a test stub)
    /// returns from its refresh.
    pub fn empty() -> Self {
        KvCache {
            layers: Vec::new(),
            position_ids: Tensor::zeros([0, 0], (Kind::Int64, Device::Cpu)),
            key_mask: None,
        }
    }

    /// Whether it holds no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Bytes held by the keys and values.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        self.layers
            .iter()
            .map(|l| size(&l.keys) + size(&l.values))
            .sum()
    }
}

/// One layer's rotated keys and values, `[B, L, nkv, D]` (row-major by position, so a
/// step's fresh rows are written with one `index_put_`).
#[derive(Debug)]
pub(crate) struct LayerKv {
    keys: Tensor,
    values: Tensor,
}

impl LayerKv {
    /// Keeps `k, v [B, nkv, L, D]` of a full forward.
    pub(crate) fn record(k: &Tensor, v: &Tensor) -> Self {
        LayerKv {
            keys: k.transpose(1, 2).contiguous(),
            values: v.transpose(1, 2).contiguous(),
        }
    }

    /// Writes the fresh `k, v [B, nkv, Q, D]` of the valid query slots into the cache and
    /// returns the keys and values every query attends to, `[B, nkv, L, D]`.
    pub(crate) fn update(&mut self, k: &Tensor, v: &Tensor, columns: &Columns) -> (Tensor, Tensor) {
        let slots = [
            Some(columns.rows.shallow_clone()),
            Some(columns.slots.shallow_clone()),
        ];
        let at = [
            Some(columns.rows.shallow_clone()),
            Some(columns.flat.shallow_clone()),
        ];
        let fresh_k = k.transpose(1, 2).index(&slots); // [N, nkv, D]
        let fresh_v = v.transpose(1, 2).index(&slots);
        let _ = self.keys.index_put_(&at, &fresh_k, false);
        let _ = self.values.index_put_(&at, &fresh_v, false);
        (self.keys.transpose(1, 2), self.values.transpose(1, 2))
    }
}

/// What one attention layer does with keys and values on this forward.
pub(crate) enum KvSlot<'a> {
    /// Nothing: the plain forward.
    Off,
    /// Keep them (a refresh).
    Record(&'a mut Option<LayerKv>),
    /// Update the cache at the computed columns and attend through it (a cached step).
    Reuse(&'a mut LayerKv, &'a Columns),
}

/// The columns a cached step computes, per row: `cols [B, Q]` (Q = the largest row's
/// count; a shorter row's spare slots point at columns it does not compute, whose outputs
/// are ignored and never written), and the valid slots flattened as `(rows, slots, flat
/// columns) [N]`.
#[derive(Debug)]
pub(crate) struct Columns {
    cols: Tensor,
    rows: Tensor,
    slots: Tensor,
    flat: Tensor,
    /// `[B, L]` slot of each computed column, −1 elsewhere.
    slot_of: Tensor,
}

impl Columns {
    /// The true entries of `compute [B, L]`, in ascending column order per row.
    fn of(compute: &Tensor) -> Self {
        let (b, l) = compute.size2().expect("compute is [B, L]");
        let device = compute.device();
        let counts = compute.sum_dim_intlist(1, false, Kind::Int64); // [B]
        let q = counts.max().int64_value(&[]).max(1);
        // Computed columns sort first (keys < L), the rest after (keys ≥ L).
        let key = Tensor::arange(l, (Kind::Int64, device)).unsqueeze(0)
            + compute.logical_not().to_kind(Kind::Int64) * l;
        let (_, order) = key.sort(1, false);
        let cols = order.narrow(1, 0, q.min(l));
        let valid = Tensor::arange(cols.size()[1], (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&counts.unsqueeze(1));
        let nz = valid.nonzero();
        let (rows, slots) = (nz.select(1, 0), nz.select(1, 1));
        let flat = cols.index(&[Some(rows.shallow_clone()), Some(slots.shallow_clone())]);
        let slot_of = Tensor::full([b, l], -1i64, (Kind::Int64, device)).index_put(
            &[Some(rows.shallow_clone()), Some(flat.shallow_clone())],
            &slots,
            false,
        );
        Columns {
            cols,
            rows,
            slots,
            flat,
            slot_of,
        }
    }
}

impl DreamModel {
    /// `forward(ids, attention_mask, Some(select))` — bitwise — that also returns every
    /// layer's keys and values for later [`Self::forward_cached`] steps.
    pub fn forward_refresh(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        select: &Tensor,
    ) -> (Tensor, KvCache) {
        let (position_ids, key_mask) = self.positions(ids, attention_mask);
        let ctx = self.context_at(&position_ids, key_mask.as_ref().map(Tensor::shallow_clone));
        let mut xs = self.embed(ids);
        let mut layers = Vec::with_capacity(self.layers().len());
        for layer in self.layers() {
            let mut slot = None;
            xs = layer.forward_kv(&xs, &ctx, KvSlot::Record(&mut slot));
            layers.extend(slot);
        }
        let hidden = self.final_norm(&xs);
        let cache = KvCache {
            layers,
            position_ids: position_ids.contiguous(),
            key_mask,
        };
        (self.token_logits(&hidden, select), cache)
    }

    /// f32 logits `[N, V]` for the true entries of `select [B, L]` (row-major), computing
    /// only the columns in `compute [B, L]` plus the rows that score `select` (the shift),
    /// with every other position's keys and values taken from `cache`. The computed
    /// columns' fresh keys and values replace theirs in the cache.
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        compute: &Tensor,
        select: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        assert_eq!(
            cache.layers.len(),
            self.layers().len(),
            "forward_cached needs the cache of a refresh of this model"
        );
        let columns = Columns::of(&compute.logical_or(&self.scoring_mask(select)));
        let ctx = self.context_at(
            &cache.position_ids.gather(1, &columns.cols, false),
            cache.key_mask.as_ref().map(Tensor::shallow_clone),
        );
        let mut xs = self.embed(&ids.gather(1, &columns.cols, false)); // [B, Q, H]
        for (layer, slot) in self.layers().iter().zip(cache.layers.iter_mut()) {
            xs = layer.forward_kv(&xs, &ctx, KvSlot::Reuse(slot, &columns));
        }
        let hidden = self.final_norm(&xs);
        let positions = select.nonzero(); // [N, 2]
        let batch = positions.select(1, 0);
        let mut pos = positions.select(1, 1);
        if self.shifted() {
            pos = (pos - 1).clamp_min(0);
        }
        let slot = columns
            .slot_of
            .index(&[Some(batch.shallow_clone()), Some(pos)]);
        self.lm_logits(&hidden.index(&[Some(batch), Some(slot)]))
    }

    /// `[B, L]` bool: the hidden-state rows that score the tokens at `select` (row p − 1
    /// for shifted models, row 0 scoring token 0; row p otherwise).
    fn scoring_mask(&self, select: &Tensor) -> Tensor {
        if !self.shifted() {
            return select.shallow_clone();
        }
        let (b, l) = select.size2().expect("select is [B, L]");
        let device = select.device();
        let left = Tensor::cat(
            &[
                select.narrow(1, 1, l - 1),
                Tensor::zeros([b, 1], (Kind::Bool, device)),
            ],
            1,
        );
        let column0 = Tensor::arange(l, (Kind::Int64, device)).eq(0).unsqueeze(0);
        left.logical_or(&select.logical_and(&column0))
    }
}
