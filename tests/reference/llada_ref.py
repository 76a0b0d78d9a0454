"""Plain-PyTorch reference of LLaDA-8B's architecture (the OLMo-style "llama" block of
LLaDA's modeling code), read from a LLaDA-layout folder by LLaDA's own config keys and
tensor names, for Couplet's LLaDA parity test. Written from the architecture, not from
Couplet's Rust code or dream_ref.py's Dream model. Run by the .venv python.

    python llada_ref.py forward MODEL_DIR REQUEST.json OUT.bin
        REQUEST: {"ids": [[...]]}   (unpadded rows: LLaDA numbers positions 0..L-1)
        OUT.bin: little-endian f32 logits [B, L, V]; row i scores token i (LLaDA's logits
        are not shifted)
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dream_ref import load_weights, tensor_bytes  # noqa: E402  (file I/O only)


class LLaDA:
    def __init__(self, model_dir):
        c = json.load(open(os.path.join(model_dir, "config.json")))
        assert c["model_type"] == "llada" and c.get("block_type", "llama") == "llama"
        self.c = c
        self.w = load_weights(model_dir)
        self.d = c["d_model"]
        self.heads = c["n_heads"]
        self.kv_heads = c.get("n_kv_heads") or self.heads
        self.head_dim = self.d // self.heads
        self.eps = c.get("rms_norm_eps", 1e-5)
        self.theta = c.get("rope_theta", 10000.0)
        self.qkv_bias = bool(c.get("include_qkv_bias") or c.get("include_bias"))

    def norm(self, x, weight):
        # RMSLayerNorm: x / sqrt(mean(x^2) + eps), then the learned scale.
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x

    def proj(self, x, name, bias):
        y = x @ self.w[name + ".weight"].T
        if bias:
            y = y + self.w[name + ".bias"]
        return y

    def rotary(self, x):
        # Rotate-half rotary embedding over positions 0..L-1.
        L, d = x.shape[-2], self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        freqs = torch.outer(torch.arange(L, dtype=torch.float64), inv_freq)
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos().float(), emb.sin().float()
        half1, half2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-half2, half1], -1) * sin

    def block(self, x, i):
        p = f"model.transformer.blocks.{i}."
        B, L, _ = x.shape
        h = self.norm(x, self.w[p + "attn_norm.weight"])
        q = self.proj(h, p + "q_proj", self.qkv_bias).view(B, L, self.heads, -1).transpose(1, 2)
        k = self.proj(h, p + "k_proj", self.qkv_bias).view(B, L, self.kv_heads, -1).transpose(1, 2)
        v = self.proj(h, p + "v_proj", self.qkv_bias).view(B, L, self.kv_heads, -1).transpose(1, 2)
        q, k = self.rotary(q), self.rotary(k)
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        # Bidirectional: no causal mask.
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), -1) @ v
        att = att.transpose(1, 2).reshape(B, L, self.d)
        x = x + self.proj(att, p + "attn_out", False)
        h = self.norm(x, self.w[p + "ff_norm.weight"])
        gate = torch.nn.functional.silu(self.proj(h, p + "ff_proj", False))
        up = self.proj(h, p + "up_proj", False)
        return x + self.proj(gate * up, p + "ff_out", False)

    def logits(self, ids):
        x = self.w["model.transformer.wte.weight"][ids]
        for i in range(self.c["n_layers"]):
            x = self.block(x, i)
        x = self.norm(x, self.w["model.transformer.ln_f.weight"])
        if self.c.get("weight_tying"):
            head = self.w["model.transformer.wte.weight"]
        else:
            head = self.w["model.transformer.ff_out.weight"]
        return x @ head.T


def main():
    cmd, model_dir, request, out = sys.argv[1:5]
    assert cmd == "forward", cmd
    torch.set_num_threads(1)
    ids = torch.tensor(json.load(open(request))["ids"], dtype=torch.long)
    with torch.no_grad():
        logits = LLaDA(model_dir).logits(ids).float().contiguous()
    with open(out, "wb") as f:
        f.write(tensor_bytes(logits))


if __name__ == "__main__":
    main()
