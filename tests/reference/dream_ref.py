"""Plain-PyTorch reference of Couplet's algorithms, written from SPEC.md independently of
the Rust code, for the parity tests and benchmarks. Run by the .venv python; no
transformers needed.

    python dream_ref.py forward MODEL_DIR REQUEST.json OUT.bin
        REQUEST: {"ids": [[...]], "attention_mask": [[...]] or null}
        OUT.bin: little-endian f32 logits [B, L, V] (raw, unshifted, like transformers)
    python dream_ref.py lora_grad MODEL_DIR ADAPTER_DIR REQUEST.json OUT.json
        LoRA as PEFT applies it (y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ, s = lora_alpha / r, the adapter
        folder's adapter_config.json + adapter_model.safetensors), then the gradient of
        Σ weights[b, l] · log_softmax(token_logits)[b, l, ids[b, l]] w.r.t. every A and B.
        REQUEST: {"ids": [[...]], "weights": [[...]]}; OUT: {"loss", "grads": {name: [...]}}
    python dream_ref.py generate MODEL_DIR REQUEST.json OUT.json
        The Dream `generate` loop (SPEC 2.1) or the LLaDA/d1 block loop (SPEC 2.2), both
        computing full logits at every position as the reference implementations do.
        REQUEST: {"prompts": [[ids]], "pad", "mask", "steps", "max_new_tokens", "alg",
                  "alg_temp", "temperature", "top_p", "top_k", "eps", "seed",
                  "block_length" (block decoder when set), "remasking", "sdpa", "threads"}
        OUT: {"sequences": [[...]], "seconds": wall time of the decoding loop}

Randomness uses Couplet's counter RNG (SplitMix64 finaliser keyed by seed, stream, index),
ported below, so greedy and seeded runs can be compared token for token.
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + b : base + e]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).to(torch.float32)
    return out


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for f in files:
        weights.update(read_safetensors(os.path.join(model_dir, f)))
    return weights


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(seed, stream, index):
    key = mix64((seed + GOLDEN * (stream + 1)) & M64)
    return (mix64(key ^ mix64((index + GOLDEN) & M64)) >> 11) * (1.0 / (1 << 53))


class Dream:
    """SPEC section 1, written out op by op."""

    def __init__(self, model_dir):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_weights(model_dir)
        c = self.cfg
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.tied = c.get("tie_word_embeddings", False)
        self.shift = c.get("shift_logits", True)
        self.lora = {}  # "model.layers.i.self_attn.q_proj" -> (A, B, scale)

    def add_lora(self, adapter_dir):
        cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
        scale = cfg["lora_alpha"] / cfg["r"]
        tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
        prefix = "base_model.model."
        for name, t in tensors.items():
            module, which = name[len(prefix) :].rsplit(".lora_", 1)
            a, b = self.lora.get(module, (None, None, scale))[:2]
            t = t.clone().requires_grad_(True)
            if which.startswith("A"):
                a = t
            else:
                b = t
            self.lora[module] = (a, b, scale)

    def lin(self, h, module, bias):
        w = self.w
        y = h @ w[module + ".weight"].T
        if bias:
            y = y + w[module + ".bias"]
        if module in self.lora:
            a, b, scale = self.lora[module]
            y = y + (h @ a.T) @ b.T * scale
        return y

    def rms(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.eps))

    def rope(self, x, pos):
        d = self.head_dim
        inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        ang = pos.to(torch.float64)[..., None] * inv  # [B, L, d/2]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None].float()
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None].float()
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        rot = torch.cat([-x2, x1], -1)
        return x * cos + rot * sin

    def hidden(self, ids, attention_mask=None, sdpa=False):
        w = self.w
        B, L = ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, L, dtype=torch.long)
        a = attention_mask.long()
        pos = a.cumsum(-1) - 1
        pos = pos.masked_fill(a == 0, 1)
        allowed = (a[:, None, :, None] * a[:, None, None, :]).bool()  # [B,1,Lq,Lk]
        x = w["model.embed_tokens.weight"][ids]
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self.rms(x, w[p + "input_layernorm.weight"])
            q = self.lin(h, p + "self_attn.q_proj", True)
            k = self.lin(h, p + "self_attn.k_proj", True)
            v = self.lin(h, p + "self_attn.v_proj", True)
            q = q.view(B, L, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            if sdpa:  # what transformers' sdpa attention does; used by the benchmarks
                mask = None if bool(a.all()) else allowed
                att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                att = att.nan_to_num(0.0)
            else:
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
                scores = scores.masked_fill(~allowed, float("-inf"))
                probs = torch.softmax(scores, -1).nan_to_num(0.0)  # pad query rows: all -inf
                att = probs @ v
            att = att.transpose(1, 2).reshape(B, L, self.heads * self.head_dim)
            x = x + self.lin(att, p + "self_attn.o_proj", False)
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = self.lin(h, p + "mlp.gate_proj", False)
            up = self.lin(h, p + "mlp.up_proj", False)
            x = x + self.lin(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj", False)
        return self.rms(x, w["model.norm.weight"])

    def logits(self, ids, attention_mask=None, sdpa=False):
        head = self.w["model.embed_tokens.weight"] if self.tied else self.w["lm_head.weight"]
        return self.hidden(ids, attention_mask, sdpa) @ head.T

    def token_logits(self, ids, attention_mask=None, sdpa=False):
        """Full logits [B, L, V] where row i scores token i (shift applied when the model is
        shifted), as the decoders consume them."""
        logits = self.logits(ids, attention_mask, sdpa)
        if self.shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits


# ---------------------------------------------------------------------------------------
# Decoders. Shared deviations from the released code, mirrored from Couplet on purpose:
# counter-RNG draws keyed by (seed, sample, step, completion offset); the [MASK] logit set
# to -inf before proposing; ties in confidence broken towards the left-most position.

STREAM_TOKEN, STREAM_TRANSFER, STREAM_POSITION = 0x10, 0x11, 0x12
STREAM_BLOCK_TOKEN, STREAM_REMASK = 0x20, 0x21


def draws(stream, seed, idx, P, K, steps, step):
    """Uniforms for the masked positions idx ([N, 2] row-major), like Couplet's canvas."""
    vals = [uniform(seed, stream, (int(b) * steps + step) * K + (int(p) - P)) for b, p in idx.tolist()]
    return torch.tensor(vals, dtype=torch.float64)


def top_p_logits(logits, top_p):
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits, top_k):
    top_k = min(top_k, logits.size(-1))
    remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def sample_tokens(logits, temperature, top_p, top_k, u, margin=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        cdf = probs.double().cumsum(-1)
        x0 = (cdf <= (u[:, None] * cdf[:, -1:])).sum(-1).clamp(max=probs.shape[-1] - 1)
        confidence = torch.gather(probs, -1, x0[:, None]).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        top = torch.sort(probs, dim=-1, descending=True)[0]
        confidence = top[:, 0] - top[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def left_pad(prompts, pad):
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


def dream_generate(model, req):
    ids, amask = left_pad(req["prompts"], req["pad"])
    mask_id, K, S = req["mask"], req["max_new_tokens"], req["steps"]
    alg, alg_temp, seed = req["alg"], req.get("alg_temp") or 0.0, req["seed"]
    temperature, top_p, top_k = req["temperature"], req.get("top_p"), req.get("top_k")
    sdpa = req.get("sdpa", False)
    B, P = ids.shape
    x = torch.cat([ids, torch.full((B, K), mask_id, dtype=torch.long)], 1)
    attention = torch.cat([amask, torch.ones(B, K, dtype=torch.long)], 1) if bool((amask == 0).any()) else None
    timesteps = torch.linspace(1, req.get("eps", 1e-3), S + 1)
    for i in range(S):
        mask_index = x == mask_id
        logits = model.token_logits(x, attention, sdpa)  # [B, L, V]: every position
        logits[..., mask_id] = float("-inf")
        mask_logits = logits[mask_index]
        idx = mask_index.nonzero()
        t, s = timesteps[i], timesteps[i + 1]
        u_tok = draws(STREAM_TOKEN, seed, idx, P, K, S, i) if temperature > 0 else None
        if alg == "origin":
            p_transfer = 1 - s / t if i < S - 1 else 1
            u = draws(STREAM_TRANSFER, seed, idx, P, K, S, i).float()
            transfer = u < p_transfer
            _, x0 = sample_tokens(mask_logits, temperature, top_p, top_k, u_tok)
            x0 = torch.where(transfer, x0, torch.full_like(x0, mask_id))
            x[mask_index] = x0
        else:
            conf, x0 = sample_tokens(
                mask_logits, temperature, top_p, top_k, u_tok,
                margin=alg == "topk_margin", neg_entropy=alg == "entropy",
            )
            num_mask = mask_index.sum() / mask_index.shape[0]  # the reference's batch average
            n = int(num_mask * (1 - s / t)) if i < S - 1 else int(num_mask)
            full = torch.full(x.shape, float("-inf"), dtype=torch.float64)
            if alg_temp > 0:
                g = draws(STREAM_POSITION, seed, idx, P, K, S, i).clamp(1e-300, 1.0)
                full[mask_index] = conf.double() / alg_temp - torch.log(-torch.log(g))
            else:
                full[mask_index] = conf.double()
            if n > 0:
                order = torch.sort(full, dim=-1, descending=True, stable=True)[1][:, :n]
                x_ = torch.full_like(x, mask_id)
                x_[mask_index] = x0
                rows = torch.arange(B)[:, None].expand_as(order)
                x[rows, order] = x_[rows, order]
    return x


def block_generate(model, req):
    ids, amask = left_pad(req["prompts"], req["pad"])
    mask_id, K, S, L_b = req["mask"], req["max_new_tokens"], req["steps"], req["block_length"]
    temperature, seed, sdpa = req["temperature"], req["seed"], req.get("sdpa", False)
    B, P = ids.shape
    x = torch.cat([ids, torch.full((B, K), mask_id, dtype=torch.long)], 1)
    attention = torch.cat([amask, torch.ones(B, K, dtype=torch.long)], 1) if bool((amask == 0).any()) else None
    blocks = K // L_b
    steps = S // blocks
    for nb in range(blocks):
        lo, hi = P + nb * L_b, P + (nb + 1) * L_b
        m = (x[:, lo:hi] == mask_id).sum(1, keepdim=True)
        num = torch.zeros(B, steps, dtype=torch.long) + m // steps
        for r in range(B):
            num[r, : int(m[r] % steps)] += 1
        for i in range(steps):
            step = nb * steps + i
            mask_index = x == mask_id
            logits = model.token_logits(x, attention, sdpa).double()
            logits[..., mask_id] = float("-inf")
            if temperature > 0:  # Gumbel-max == one draw from softmax(l / T)
                sel = mask_index.clone()
                sel[:, :lo] = False
                sel[:, hi:] = False
                idx = sel.nonzero()
                u = draws(STREAM_BLOCK_TOKEN, seed, idx, P, K, S, step)
                probs = torch.softmax(logits[sel] / temperature, -1)
                cdf = probs.cumsum(-1)
                x0 = torch.argmax(logits, dim=-1)
                x0[sel] = (cdf <= u[:, None] * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)
            else:
                x0 = torch.argmax(logits, dim=-1)
            if req.get("remasking", "low_confidence") == "low_confidence":
                p = torch.softmax(logits, dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            else:
                sel = mask_index.clone()
                sel[:, :lo] = False
                sel[:, hi:] = False
                x0_p = torch.full(x.shape, float("-inf"), dtype=torch.float64)
                x0_p[sel] = draws(STREAM_REMASK, seed, sel.nonzero(), P, K, S, step)
            x0_p[:, hi:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=torch.float64))
            for r in range(B):
                k = int(num[r, i])
                if k > 0:
                    sel_idx = torch.sort(confidence[r], descending=True, stable=True)[1][:k]
                    x[r, sel_idx] = x0[r, sel_idx]
    return x


def tensor_bytes(t):
    """Raw little-endian bytes of a contiguous tensor (no numpy in this venv)."""
    return bytes(t.contiguous().view(-1).view(torch.uint8).tolist())


def cmd_forward(model_dir, request, out):
    req = json.load(open(request))
    ids = torch.tensor(req["ids"], dtype=torch.long)
    mask = req.get("attention_mask")
    mask = torch.tensor(mask, dtype=torch.long) if mask is not None else None
    with torch.no_grad():
        logits = Dream(model_dir).logits(ids, mask).float().contiguous()
    with open(out, "wb") as f:
        f.write(tensor_bytes(logits))


# ---------------------------------------------------------------------------------------
# Likelihood estimators (SPEC 5), naive: full logits for every version, then gather.

STREAM_RATIO, STREAM_UNIFORM, STREAM_PROMPT = 0x100, 0x200, 0x300


def u01(seed, stream, sample, offset):
    return uniform(seed, stream, (sample << 20) | offset)


def estimate(model, req):
    seqs = torch.tensor(req["sequences"], dtype=torch.long)
    pmask = torch.tensor(req["prompt_mask"], dtype=torch.long)
    P, mask_id, seed, est = req["prompt_width"], req["mask"], req["seed"], req["estimator"]
    B, L = seqs.shape
    K = L - P
    attention = torch.cat([pmask, torch.ones(B, K, dtype=torch.long)], 1) if bool((pmask == 0).any()) else None

    def lp_of(masked):  # masked: [B, L] bool → lp [B, K] of the true tokens
        x = seqs.masked_fill(masked, mask_id)
        logp = torch.log_softmax(model.token_logits(x, attention), -1)
        return logp.gather(-1, seqs[..., None]).squeeze(-1)[:, P:]

    full = torch.zeros(B, L, dtype=torch.bool)
    full[:, P:] = True
    kind = est["kind"]
    out = torch.zeros(B, K, dtype=torch.float64)
    if kind in ("full_mask", "d1"):
        m = full.clone()
        if kind == "d1":
            for b, sample in enumerate(req["samples"]):
                real = [i for i in range(P) if pmask[b, i] == 1]
                for off, pos in enumerate(real):
                    if u01(seed, STREAM_PROMPT, sample, off) < est["p_mask_prompt"]:
                        m[b, pos] = True
        return lp_of(m).double()
    if kind == "coupled":
        pairs, with_full = est["pairs"], est["include_full_mask"]
        denom = pairs + (1 if with_full else 0)
        if with_full:
            out += lp_of(full).double()
        for i in range(pairs):
            t = torch.tensor([0.2 + 0.6 * u01(seed, STREAM_RATIO + 2 * i, s, 0) for s in req["samples"]], dtype=torch.float64)
            u = torch.tensor([[u01(seed, STREAM_UNIFORM + 2 * i, s, j) for j in range(K)] for s in req["samples"]], dtype=torch.float64)
            in_m = u < t[:, None]
            m1 = torch.zeros(B, L, dtype=torch.bool); m1[:, P:] = in_m
            m2 = torch.zeros(B, L, dtype=torch.bool); m2[:, P:] = ~in_m
            out += torch.where(in_m, lp_of(m1).double() / t[:, None], lp_of(m2).double() / (1 - t[:, None]))
        return out / denom
    if kind == "decoupled":
        out = 0.5 * lp_of(full).double()
        for h in range(2):
            t = torch.tensor([0.2 + 0.6 * u01(seed, STREAM_RATIO + h, s, 0) for s in req["samples"]], dtype=torch.float64)
            u = torch.tensor([[u01(seed, STREAM_UNIFORM + h, s, j) for j in range(K)] for s in req["samples"]], dtype=torch.float64)
            mk = u < t[:, None]
            m = torch.zeros(B, L, dtype=torch.bool); m[:, P:] = mk
            out += torch.where(mk, 0.5 * lp_of(m).double() / t[:, None], torch.zeros_like(out))
        return out
    raise ValueError(kind)


def grpo(lp, obj):
    """SPEC 6: clipped ratio objective + k3 KL, token mean over the batch."""
    adv = torch.tensor(obj["advantages"], dtype=torch.float64)[:, None]
    old = torch.tensor(obj["old"], dtype=torch.float64) if obj.get("old") is not None else lp
    c = torch.tensor(obj["completion_mask"], dtype=torch.float64)
    ratio = torch.exp(lp - old)
    clipped = torch.clamp(ratio, 1 - obj["epsilon_low"], 1 + obj["epsilon_high"])
    loss = -torch.minimum(ratio * adv, clipped * adv)
    n = max(1.0, float(c.sum()))
    kl_mean = 0.0
    if obj["beta"] > 0:
        ref = torch.tensor(obj["ref"], dtype=torch.float64)
        kl = torch.exp(ref - lp) - (ref - lp) - 1
        loss = loss + obj["beta"] * kl
        kl_mean = float((kl * c).sum()) / n
    low = ((ratio < 1 - obj["epsilon_low"]) & (adv < 0)).double()
    high = ((ratio > 1 + obj["epsilon_high"]) & (adv > 0)).double()
    return {"loss": float((loss * c).sum()) / n, "kl": kl_mean, "clip_low": float((low * c).sum()) / n,
            "clip_high": float((high * c).sum()) / n}


def cmd_estimate(model_dir, request, out):
    req = json.load(open(request))
    with torch.no_grad():
        est = estimate(Dream(model_dir), req)
    result = {"estimates": est.tolist()}
    if req.get("objective"):
        result["objective"] = grpo(est, req["objective"])
    json.dump(result, open(out, "w"))


def cmd_generate(model_dir, request, out):
    import time

    req = json.load(open(request))
    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    model = Dream(model_dir)
    start = time.perf_counter()
    with torch.no_grad():
        x = block_generate(model, req) if req.get("block_length") else dream_generate(model, req)
    seconds = time.perf_counter() - start
    json.dump({"sequences": x.tolist(), "seconds": seconds}, open(out, "w"))


def cmd_lora_grad(model_dir, adapter_dir, request, out):
    req = json.load(open(request))
    ids = torch.tensor(req["ids"], dtype=torch.long)
    weights = torch.tensor(req["weights"], dtype=torch.float32)
    model = Dream(model_dir)
    model.add_lora(adapter_dir)
    lp = torch.log_softmax(model.token_logits(ids), -1).gather(-1, ids[..., None])[..., 0]
    loss = (lp * weights).sum()
    loss.backward()
    grads = {}
    for module, (a, b, _) in model.lora.items():
        grads["base_model.model." + module + ".lora_A.weight"] = a.grad.reshape(-1).tolist()
        grads["base_model.model." + module + ".lora_B.weight"] = b.grad.reshape(-1).tolist()
    json.dump({"loss": loss.item(), "grads": grads}, open(out, "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, *rest = sys.argv[1:]
    commands = {
        "forward": cmd_forward,
        "generate": cmd_generate,
        "estimate": cmd_estimate,
        "lora_grad": cmd_lora_grad,
    }
    commands[cmd](*rest)
