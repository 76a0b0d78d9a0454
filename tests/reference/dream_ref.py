"""Plain-PyTorch reference of Couplet's algorithms, written from SPEC.md independently of
the Rust code, for the parity tests. Run by the .venv python; no transformers needed.

    python dream_ref.py forward MODEL_DIR REQUEST.json OUT.bin

REQUEST.json: {"ids": [[...]], "attention_mask": [[...]] or null}
OUT.bin: little-endian f32 logits [B, L, V] (raw, unshifted, like transformers).
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

    def hidden(self, ids, attention_mask=None):
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
            q = h @ w[p + "self_attn.q_proj.weight"].T + w[p + "self_attn.q_proj.bias"]
            k = h @ w[p + "self_attn.k_proj.weight"].T + w[p + "self_attn.k_proj.bias"]
            v = h @ w[p + "self_attn.v_proj.weight"].T + w[p + "self_attn.v_proj.bias"]
            q = q.view(B, L, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, -1).nan_to_num(0.0)  # pad query rows: all -inf
            att = (probs @ v).transpose(1, 2).reshape(B, L, self.heads * self.head_dim)
            x = x + att @ w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        return self.rms(x, w["model.norm.weight"])

    def logits(self, ids, attention_mask=None):
        head = self.w["model.embed_tokens.weight"] if self.tied else self.w["lm_head.weight"]
        return self.hidden(ids, attention_mask) @ head.T


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


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, *rest = sys.argv[1:]
    {"forward": cmd_forward}[cmd](*rest)
