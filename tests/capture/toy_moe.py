"""A small MoE language model for the capture tests, in two gate layouts.

style "mixtral":  model.layers.N.block_sparse_moe.gate is an nn.Linear fed flattened [B*S, H] tokens
                  (as in Hugging Face Mixtral / Qwen2-MoE / OLMoE).
style "deepseek": model.layers.N.mlp.gate is a MoEGate with its own `weight` that takes [B, S, H]
                  and returns (top-k ids, top-k weights, aux loss), not logits (as in DeepSeek V2/V3);
                  layers < first_dense have a dense mlp (gate_proj/up_proj/down_proj), and every MoE mlp
                  also has a shared_expert_gate (Qwen2-MoE style), which no preset may match.

Every gate appends the logits it computed, shaped [B, S, E], to model.logit_log[layer] (the reference
the tests compare a trace with). `build(...)` is the --model-module entry point of
capture_router_trace.py: it returns the model and deterministic batches.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Expert(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.up = nn.Linear(hidden, 2 * hidden)
        self.down = nn.Linear(2 * hidden, hidden)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


def _combine(x, experts, ids, weights):
    out = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows, slot = torch.nonzero(ids == e, as_tuple=True)
        if rows.numel():
            out[rows] += weights[rows, slot, None].to(x.dtype) * expert(x[rows])
    return out


class MixtralLikeMoe(nn.Module):
    def __init__(self, hidden, experts, top_k, log):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList(Expert(hidden) for _ in range(experts))
        self.log = log

    def forward(self, h):
        B, S, H = h.shape
        x = h.reshape(-1, H)
        logits = self.gate(x)
        self.log.append(logits.detach().clone().reshape(B, S, -1))
        probs = torch.softmax(logits.float(), dim=-1)
        w, ids = torch.topk(probs, self.top_k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        return _combine(x, self.experts, ids, w).reshape(B, S, H), logits


class MoEGate(nn.Module):
    def __init__(self, hidden, experts, top_k, log):
        super().__init__()
        self.top_k = top_k
        self.n_routed_experts = experts
        self.weight = nn.Parameter(torch.randn(experts, hidden) / hidden ** 0.5 * 2.0)
        self.log = log

    def forward(self, h):
        B, S, H = h.shape
        logits = F.linear(h.reshape(-1, H).float(), self.weight.float())
        self.log.append(logits.detach().clone().reshape(B, S, -1))
        scores = logits.sigmoid()
        w, ids = torch.topk(scores, self.top_k, dim=-1)
        return ids, w / w.sum(dim=-1, keepdim=True), None


class DeepSeekLikeMoe(nn.Module):
    def __init__(self, hidden, experts, top_k, log):
        super().__init__()
        self.gate = MoEGate(hidden, experts, top_k, log)
        self.experts = nn.ModuleList(Expert(hidden) for _ in range(experts))
        self.shared_experts = Expert(hidden)
        self.shared_expert_gate = nn.Linear(hidden, 1, bias=False)

    def forward(self, h):
        B, S, H = h.shape
        ids, w, _ = self.gate(h)
        x = h.reshape(-1, H)
        routed = _combine(x, self.experts, ids, w)
        shared = torch.sigmoid(self.shared_expert_gate(x)) * self.shared_experts(x)
        return (routed + shared).reshape(B, S, H)


class DenseMlp(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, 2 * hidden, bias=False)
        self.up_proj = nn.Linear(hidden, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, h):
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Block(nn.Module):
    def __init__(self, style, index, hidden, experts, top_k, first_dense, log):
        super().__init__()
        self.mix = nn.Linear(hidden, hidden)
        if style == "mixtral":
            self.block_sparse_moe = MixtralLikeMoe(hidden, experts, top_k, log)
        elif style == "deepseek":
            self.mlp = DenseMlp(hidden) if index < first_dense else DeepSeekLikeMoe(hidden, experts, top_k, log)
        else:
            raise ValueError("style %r: expected mixtral or deepseek" % style)

    def forward(self, h):
        S = h.shape[1]
        running_mean = torch.cumsum(h, dim=1) / torch.arange(1, S + 1, dtype=h.dtype)[None, :, None]
        h = h + torch.tanh(self.mix(running_mean))
        ffn = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        out = ffn(h)
        return h + (out[0] if isinstance(out, tuple) else out)


class Inner(nn.Module):
    def __init__(self, style, layers, hidden, experts, top_k, vocab, first_dense, logs):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(style, i, hidden, experts, top_k, first_dense, logs[i])
                                    for i in range(layers))


class ToyMoeModel(nn.Module):
    """Named like a Hugging Face causal LM: model.embed_tokens, model.layers.N..., lm_head."""

    def __init__(self, style="mixtral", layers=4, hidden=32, experts=8, top_k=2, vocab=64, first_dense=0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.logit_log = {i: [] for i in range(layers)}
        self.model = Inner(style, layers, hidden, experts, top_k, vocab, first_dense, self.logit_log)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.moe_layers = [i for i in range(layers) if style == "mixtral" or i >= first_dense]
        self.num_experts = experts

    def forward(self, input_ids, attention_mask=None, **unused):
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h)
        return self.lm_head(h)


def make_batches(num_batches=3, seed=1, vocab=64, kind="dict"):
    """Batches of different shapes: no padding, right padding, left padding with an empty row.
    kind "dict": {"input_ids", "attention_mask", "domain"} (model(**batch)); "tensor": input ids only."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (2, 7), (4, 6), (2, 3)]
    batches = []
    for i in range(num_batches):
        B, S = shapes[i % len(shapes)]
        ids = torch.randint(0, vocab, (B, S), generator=g)
        mask = torch.ones(B, S, dtype=torch.int64)
        if i % 3 == 1:  # right padding
            for b in range(B):
                mask[b, S - b * 3:] = 0 if b else 1
        elif i % 3 == 2:  # left padding, last row empty
            for b in range(B):
                mask[b, :min(S, 2 * b)] = 0
        if kind == "tensor":
            batches.append(ids)
        else:
            batches.append({"input_ids": ids, "attention_mask": mask,
                            "domain": torch.arange(B, dtype=torch.int64) + 10 * i})
    return batches


def build(style="mixtral", layers=4, first_dense=0, batches=3, kind="dict", seed=0):
    """--model-module entry point: (model, batches)."""
    model = ToyMoeModel(style=style, layers=layers, first_dense=first_dense, seed=seed)
    return model, make_batches(batches, kind=kind)
