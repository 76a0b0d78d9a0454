"""Plain-PyTorch ports of the other dLLM RL methods, written from the authors' released code
(file and line references in ../shared/docs/ALGORITHMS.md) on top of dream_ref.py's model,
for Couplet's parity tests.

    python algorithms_ref.py run MODEL_DIR REQUEST.json OUT.json
        REQUEST: {"method": {"name": ..., knobs}, "sequences", "prompt_mask", "prompt_width",
                  "completion_mask", "samples", "seed", "mask", "advantages",
                  "old" / "ref" (scores or null), "grad_params": [names]}
        OUT: {"scores", "loss", "grads": {name: [...]}}

The draws that the authors make with torch's global generator (mask counts, random
permutations, prompt masking) come from Couplet's counter RNG here, keyed as Couplet keys
them; everything else follows the authors' code.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dream_ref import Dream, uniform  # noqa: E402

STREAM_PROMPT = 0x300
ESPO_OFFSET, ESPO_ORDER = 0xA00, 0xA80
BGPO_OFFSET, BGPO_ORDER = 0xB00, 0xB01
SPG_BLOCK, SPG_COUNT, SPG_ORDER, SPG_CONTEXT = 0xC00, 0xC40, 0xC80, 0xCC0
SPG_COMPLETION_OFFSET = 1 << 19


def u01(seed, stream, sample, offset):
    return uniform(seed, stream, (sample << 20) | offset)


def randperm_first(count, positions, seed, stream, sample):
    """`randperm(n)[:count]` of `positions`, ordered by counter draws."""
    keyed = sorted((u01(seed, stream, sample, j), j) for j in positions)
    return [j for _, j in keyed[:count]]


class Batch:
    def __init__(self, model, req):
        self.model = model
        self.seqs = torch.tensor(req["sequences"], dtype=torch.long)
        self.pmask = torch.tensor(req["prompt_mask"], dtype=torch.long)
        self.cmask = torch.tensor(req["completion_mask"], dtype=torch.long)
        self.P, self.mask_id, self.seed = req["prompt_width"], req["mask"], req["seed"]
        self.samples = req["samples"]
        self.B, L = self.seqs.shape
        self.K = L - self.P
        padded = bool((self.pmask == 0).any())
        ones = torch.ones(self.B, self.K, dtype=torch.long)
        self.attention = torch.cat([self.pmask, ones], 1) if padded else None

    def logps(self, masked):
        """log p of the true completion tokens [B, K] with `masked` [B, L] set to [MASK]."""
        x = self.seqs.masked_fill(masked, self.mask_id)
        logits = self.model.token_logits(x, self.attention)[:, self.P:]
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), self.seqs[:, self.P:].reshape(-1), reduction="none"
        )
        return -ce.view(self.B, self.K)

    def completion_masked(self, rows_positions):
        m = torch.zeros_like(self.seqs, dtype=torch.bool)
        for b, positions in enumerate(rows_positions):
            for j in positions:
                m[b, self.P + j] = True
        return m


# ESPO: espo/espo_trainer.py, forward_process / _get_elbo / _get_elbo_mc / compute_loss.
def espo_scores(bt, knobs):
    K, b = bt.K, bt.B
    elbos = []
    for m in range(knobs["num_mc"]):
        if knobs["stratify_across_rows"]:
            k = int(u01(bt.seed, ESPO_OFFSET + m, bt.samples[0], 0) * (K + 1))
            x = torch.round(torch.linspace(float(k), k + (b - 1) * ((K + 1) / b), steps=b)).long()
        else:
            x = torch.tensor([int(u01(bt.seed, ESPO_OFFSET + m, s, 0) * (K + 1)) for s in bt.samples])
        x = x % (K + 1)
        rows = [randperm_first(int(x[i]), range(K), bt.seed, ESPO_ORDER + m, s) for i, s in enumerate(bt.samples)]
        is_mask = bt.completion_masked(rows)
        p_mask = (x / (K + 1)).unsqueeze(1).repeat(1, K)  # float32, as theirs
        kept = is_mask[:, bt.P:]
        loss = torch.zeros(b, K, dtype=p_mask.dtype)
        loss[kept] = -bt.logps(is_mask)[kept] / p_mask[kept]
        if knobs["reduce_var"]:
            coupled = torch.zeros_like(is_mask)
            coupled[:, bt.P:] = ~kept
            loss[~kept] = -bt.logps(coupled)[~kept] / (K / (K + 1) - p_mask[~kept])
            loss = loss / 2
        elbos.append(-loss.sum(-1))
    return torch.stack(elbos).mean(0)


def espo_loss(s, req, knobs):
    adv = torch.tensor(req["advantages"], dtype=torch.float32).view(-1, 1)
    K, b = len(req["completion_mask"][0]), s.shape[0]
    s = s.view(-1, 1)
    old = torch.tensor(req["old"], dtype=torch.float32).view(-1, 1) if req.get("old") is not None else s.detach()
    coef_1 = torch.exp((s - old) / K)
    coef_2 = torch.clamp(coef_1, 1 - knobs["epsilon_low"], 1 + knobs["epsilon_high"])
    loss = -torch.min(coef_1 * adv, coef_2 * adv).sum() / b
    if knobs["beta"] != 0.0:
        ref = torch.tensor(req["ref"], dtype=torch.float32).view(-1, 1)
        kl = (s - ref) ** 2 / 2.0
        loss = loss + knobs["beta"] * kl.sum() / (b * K)
    return loss


# wd1: wd1/trainers/rev_grpo_trainer.py, forward_process / _get_per_token_logps /
# compute_loss (trainer_type wll_d1_neg). Prompt masking of real tokens only, with the
# counter RNG, as Couplet's d1.
def wd1_scores(bt, knobs):
    m = torch.zeros_like(bt.seqs, dtype=torch.bool)
    m[:, bt.P:] = True
    for b, sample in enumerate(bt.samples):
        real = [i for i in range(bt.P) if bt.pmask[b, i] == 1]
        for off, pos in enumerate(real):
            if u01(bt.seed, STREAM_PROMPT, sample, off) < knobs["p_mask_prompt"]:
                m[b, pos] = True
    return (bt.logps(m) * bt.cmask).sum(-1)


def wd1_loss(s, req, knobs):
    adv = torch.tensor(req["advantages"], dtype=torch.float32)
    loss = -(s * torch.softmax(adv, dim=0)).sum()
    if not knobs["positive_only"]:
        loss = loss + (s * torch.softmax(-adv, dim=0)).sum()
    return loss


# BGPO (DARE port): the VRPO stratified-timestep masks (dllm_fsdp_workers.py), l = ELBO / L
# per Monte-Carlo sample, compute_policy_loss_bgpo (dllm_core_algos.py), token-mean, / mc_num.
def bgpo_scores(bt, knobs):
    n = knobs["mc_num"]
    out = torch.zeros(bt.B, n)
    cols = []
    for r in range(n):
        rows, ps = [], []
        for b, s in enumerate(bt.samples):
            valid = [j for j in range(bt.K) if bt.cmask[b, j] == 1]
            T = len(valid)
            k = 1 + int(u01(bt.seed, BGPO_OFFSET, s, 0) * T)
            x = ((int(torch.round(torch.tensor(k + r * T / n, dtype=torch.float64))) - 1) % T) + 1
            rows.append(randperm_first(x, valid, bt.seed, BGPO_ORDER + r, s))
            ps.append(x / T)
        masked = bt.completion_masked(rows)
        lp = bt.logps(masked)
        p = torch.tensor(ps).view(-1, 1)
        elbo = (lp * masked[:, bt.P:] / p).sum(-1)
        cols.append(elbo / bt.K)
    return torch.stack(cols, 1)


def bgpo_loss(l_theta, req, knobs):
    adv = torch.tensor(req["advantages"], dtype=torch.float32).view(-1, 1).expand_as(l_theta)
    old = torch.tensor(req["old"], dtype=torch.float32).view_as(l_theta) if req.get("old") is not None else l_theta.detach()
    mask = torch.tensor(req["completion_mask"], dtype=torch.float32)
    n = l_theta.shape[1]
    total = 0.0
    for r in range(n):
        a, lt, lo = adv[:, r : r + 1], l_theta[:, r : r + 1], old[:, r : r + 1]
        # theirs: torch.where(A > 0, log(1 + l − l_old), l − l_old), then exp
        if knobs["nan_below_minus_one"]:
            neg_kl = torch.where(a > 0, torch.log(1 + lt - lo), lt - lo)
            ratio = torch.exp(neg_kl)
        else:
            ratio = torch.where(a > 0, 1 + lt - lo, torch.exp(lt - lo))
        ratio = ratio.expand_as(mask)
        a = a.expand_as(mask)
        pg1 = -a * ratio
        pg2 = -a * torch.clamp(ratio, 1 - knobs["epsilon_low"], 1 + knobs["epsilon_high"])
        c1 = torch.maximum(pg1, pg2)
        c2 = torch.min(-a * knobs["dual_clip"], c1)
        pg = torch.where(a < 0, c2, c1)
        total = total + (pg * mask).sum() / mask.sum() / n  # token-mean, one backward per r
    return total


# SPG: spg/spg_trainer.py, forward_process (forward_type "block_random", use_mask_prompt),
# _get_per_seq_logps (ELBO / EUBO / mix by reward_mask = A > 0), compute_loss.
def spg_forward_process(bt, knobs):
    b, l = bt.B, bt.P + bt.K
    num_t, bl = knobs["num_t"], knobs["block_length"]
    num_blocks = bt.K // bl
    completion_length = bt.cmask.sum(-1)
    completion_num_blocks = (completion_length - 1) // bl + 1
    mask_block_idx = torch.zeros(b, num_t, dtype=torch.long)
    for i, s in enumerate(bt.samples):
        perm = randperm_first(num_blocks, range(num_blocks), bt.seed, SPG_BLOCK, s)
        mask_block_idx[i] = torch.tensor(perm[:num_t]) % completion_num_blocks[i]
    is_mask = torch.zeros(b, num_t, l, dtype=torch.bool)
    for i in range(b):
        for j in range(num_t):
            is_mask[i, j, -(num_blocks - mask_block_idx[i, j]) * bl:] = True
    is_mask_following = torch.ones(b, num_t, l, dtype=torch.bool)
    for i, s in enumerate(bt.samples):
        for j in range(num_t):
            blk = int(mask_block_idx[i, j])
            mask_length = min(bl, int(completion_length[i]) - bl * blk)
            mask_num = 1 + int(u01(bt.seed, SPG_COUNT + j, s, 0) * mask_length)  # randint(1, n + 1)
            start = bl * blk
            chosen = set(randperm_first(mask_num, range(start, start + mask_length), bt.seed, SPG_ORDER + j, s))
            lo = bt.P + start
            for q in range(mask_length):
                is_mask_following[i, j, lo + q] = (start + q) in chosen
    completion_mask_append = torch.cat(
        (torch.ones(b, num_t, bt.P, dtype=torch.bool), bt.cmask.bool().unsqueeze(1).repeat(1, num_t, 1)), dim=2
    )
    # use_mask_prompt: ~is_mask & (rand < p) — the prompt and the earlier blocks.
    random_hit = torch.zeros(b, num_t, l, dtype=torch.bool)
    for i, s in enumerate(bt.samples):
        real = [q for q in range(bt.P) if bt.pmask[i, q] == 1]
        for j in range(num_t):
            for off, pos in enumerate(real):
                random_hit[i, j, pos] = u01(bt.seed, SPG_CONTEXT + j, s, off) < knobs["p_mask_prompt"]
            for q in range(bt.K):
                random_hit[i, j, bt.P + q] = u01(bt.seed, SPG_CONTEXT + j, s, SPG_COMPLETION_OFFSET + q) < knobs["p_mask_prompt"]
    is_mask_prompt = ~is_mask & random_hit
    return is_mask_prompt | (is_mask & is_mask_following) | ~completion_mask_append


def spg_scores(bt, knobs):
    num_t, beta = knobs["num_t"], knobs["eubo_beta"]
    masked = spg_forward_process(bt, knobs)  # [b, num_t, l]
    logps, probs = [], []
    for j in range(num_t):
        lp = bt.logps(masked[:, j])
        logps.append(lp)
        probs.append(lp.exp())  # softmax(logits)[target]
    per_token_logps = torch.stack(logps, 1)  # [b, num_t, K]
    per_token_probs = torch.stack(probs, 1)
    perturb = masked[:, :, bt.P:].float()
    cm = bt.cmask.float().unsqueeze(1).expand_as(perturb)
    denominator = (cm * perturb).sum(-1).clamp(min=1e-8)
    per_seq = (per_token_logps * cm * perturb).sum(-1) / denominator  # [b, num_t]
    empirical_t = (cm * perturb).sum(-1) / cm.sum(-1)
    avg = (per_token_probs.pow(beta) * perturb * cm / empirical_t.unsqueeze(-1).clamp(min=1e-8)).mean(1)
    dezero = avg.clone()
    dezero[dezero == 0] = 1
    loss_mask = avg > 0
    eubo = (dezero.log() * loss_mask).sum(-1) / loss_mask.sum(-1).clamp(min=1e-8) / beta
    return torch.stack([per_seq.mean(1), eubo], 1)


def spg_loss(s, req, knobs):
    adv = torch.tensor(req["advantages"], dtype=torch.float32)
    reward_mask = adv > 0
    w = {"mix": knobs["mix_weight"], "eubo": 1.0, "elbo": 0.0}[knobs["estimate"]]
    negative = w * s[:, 1] + (1 - w) * s[:, 0]
    per_seq = reward_mask.float() * s[:, 0] + (~reward_mask).float() * negative
    per_seq_loss = -adv * per_seq
    length = torch.tensor(req["completion_mask"], dtype=torch.float32).sum(1)
    return (per_seq_loss * length).sum() / length.sum()


# JustGRPO: grpo.py logprob_loss (one full-length forward per position, AR masking).
def just_grpo_scores(bt, knobs):
    cols = []
    for t in range(bt.K):
        m = torch.zeros_like(bt.seqs, dtype=torch.bool)
        m[:, bt.P + t:] = True  # Past = observed, future = masked
        cols.append(bt.logps(m)[:, t])
    return torch.stack(cols, 1)


def just_grpo_loss(lp, req, knobs):
    adv = torch.tensor(req["advantages"], dtype=torch.float32)
    K = lp.shape[1]
    valid_samples = float((adv != 0).sum())
    scale = 1.0 / K / (valid_samples + 1e-5)
    old = torch.tensor(req["old"], dtype=torch.float32).view_as(lp) if req.get("old") is not None else None
    total = 0.0
    for t in range(K):
        token = lp[:, t]
        ratio = (token - (old[:, t] if old is not None else token.detach())).exp()
        clipped = ratio.clamp(1 - knobs["epsilon_low"], 1 + knobs["epsilon_high"])
        loss = -torch.min(ratio * adv, clipped * adv)
        total = total + loss.mul(scale).sum()
    return total


# TraceRL: train/rl_dream.py collapse_k_unique, prepare_inputs_and_labels_for_text
# (method "TraceRL", post_num 0: post-end-of-text tokens are never targets), forward_process.
def collapse_k_unique(lst, k):
    uniq = sorted(set(lst))
    mapping = {}
    n = len(uniq)
    for idx, val in enumerate(uniq):
        group = idx // k
        end_idx = min((group + 1) * k - 1, n - 1)
        mapping[val] = uniq[end_idx]
    return [mapping[x] for x in lst]


def trace_rl_rows(bt, knobs, req):
    rows = []  # (sample, noisy mask [L], target mask [K])
    for b in range(bt.B):
        order = torch.tensor(collapse_k_unique(list(req["reveal_steps"][b]), knobs["shrink"]))
        tail_pad = bt.cmask[b] == 0
        for step_val in torch.unique(order, sorted=True):
            tgt = order == step_val
            pmask_this = tgt & ~tail_pad
            if not pmask_this.any():
                continue
            noisy = torch.zeros(bt.P + bt.K, dtype=torch.bool)
            noisy[bt.P:] = order >= step_val
            rows.append((b, noisy, pmask_this))
    return rows


def trace_rl_scores(bt, knobs, req):
    out = torch.zeros(bt.B, bt.K)
    for b, noisy, tgt in trace_rl_rows(bt, knobs, req):
        lp = bt.logps(noisy.unsqueeze(0).expand(bt.B, -1))[b]
        out = out + torch.where(tgt, lp, torch.zeros_like(lp)) * torch.nn.functional.one_hot(torch.tensor(b), bt.B).float().unsqueeze(1)
    return out


def trace_rl_loss(lp, req, knobs, bt=None):
    rows = trace_rl_rows(bt, knobs, req)
    adv = torch.tensor(req["advantages"], dtype=torch.float32)
    old = torch.tensor(req["old"], dtype=torch.float32).view_as(lp) if req.get("old") is not None else lp.detach()
    B = len(rows)
    policy, kl_total = 0.0, 0.0
    for b, _, tgt in rows:
        m = tgt.float()
        new_tok, old_tok = lp[b], old[b]
        ratio = torch.exp(new_tok - old_tok)
        clipped = torch.clamp(ratio, 1 - knobs["epsilon_low"], 1 + knobs["epsilon_high"])
        surrogate = torch.min(ratio * adv[b], clipped * adv[b]) * m
        policy = policy + surrogate.sum() / torch.clamp(m.sum(), min=1)
        kl = new_tok - old_tok
        kl = (-kl).exp() - 1.0 + kl
        kl_total = kl_total + (kl * m).sum()
    loss = -(policy / B)
    if knobs["beta"] > 0:
        loss = loss + knobs["beta"] * kl_total / B
    return loss


METHODS = {
    "espo": (espo_scores, espo_loss),
    "wd1": (wd1_scores, wd1_loss),
    "bgpo": (bgpo_scores, bgpo_loss),
    "spg": (spg_scores, spg_loss),
    "just_grpo": (just_grpo_scores, just_grpo_loss),
    "trace_rl": (trace_rl_scores, trace_rl_loss),
}


def cmd_run(model_dir, request, out):
    req = json.load(open(request))
    model = Dream(model_dir)
    for name in req["grad_params"]:
        model.w[name].requires_grad_(True)
    knobs = req["method"]
    scores_of, loss_of = METHODS[knobs["name"]]
    bt = Batch(model, req)
    if knobs["name"] == "trace_rl":  # rows come from the rollout's step map
        scores = scores_of(bt, knobs, req)
        loss = loss_of(scores, req, knobs, bt)
    else:
        scores = scores_of(bt, knobs)
        loss = loss_of(scores, req, knobs)
    loss.backward()
    grads = {name: model.w[name].grad.reshape(-1).tolist() for name in req["grad_params"]}
    json.dump({"scores": scores.detach().tolist(), "loss": loss.item(), "grads": grads}, open(out, "w"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, *rest = sys.argv[1:]
    {"run": cmd_run}[cmd](*rest)
