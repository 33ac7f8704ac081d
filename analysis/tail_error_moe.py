"""A small PyTorch MoE language model whose router logits are one source of analysis/tail_error.py.

Mixtral-like names (model.layers.N.block_sparse_moe.gate, an nn.Linear over the hidden state), so
workloads/capture/capture_router_trace.py --preset mixtral hooks its gates. Random weights, seeded; a
residual stream carries each token through the layers so that a token's routing is correlated across
layers, as in a trained model. `build(...)` is the --model-module entry point: (model, batches).
"""
import torch
import torch.nn as nn


class Moe(nn.Module):
    def __init__(self, hidden, experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(hidden, experts, bias=False)
        nn.init.normal_(self.gate.weight, std=1.5 / hidden ** 0.5)  # logits of spread ~1.5
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(experts))

    def forward(self, h):
        B, S, H = h.shape
        x = h.reshape(-1, H)
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        w, ids = torch.topk(probs, self.top_k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(ids == e, as_tuple=True)
            if rows.numel():
                out[rows] += w[rows, slot, None] * torch.tanh(expert(x[rows]))
        return h + out.reshape(B, S, H)


class Block(nn.Module):
    def __init__(self, hidden, experts, top_k):
        super().__init__()
        self.block_sparse_moe = Moe(hidden, experts, top_k)

    def forward(self, h):
        return self.block_sparse_moe(h)


class Inner(nn.Module):
    def __init__(self, layers, hidden, experts, top_k, vocab):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(hidden, experts, top_k) for _ in range(layers))


class SmallMoe(nn.Module):
    def __init__(self, layers, hidden, experts, top_k, vocab, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.model = Inner(layers, hidden, experts, top_k, vocab)
        self.num_experts = experts

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, **unused):
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h)
        return h


def build(experts=64, top_k=6, tokens=8192, steps=2, layers=2, seq_len=128, hidden=64, vocab=512, seed=1):
    """(model, batches): `steps` batches of tokens/steps tokens in sequences of seq_len, Zipf-like token ids."""
    model = SmallMoe(layers, hidden, experts, top_k, vocab, seed)
    g = torch.Generator().manual_seed(seed + 1)
    per_step = max(seq_len, tokens // steps)
    rows = max(1, per_step // seq_len)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    zipf = (1.0 / ranks) / (1.0 / ranks).sum()
    batches = []
    for _ in range(steps):
        ids = torch.multinomial(zipf, rows * seq_len, replacement=True, generator=g).reshape(rows, seq_len)
        batches.append({"input_ids": ids, "attention_mask": torch.ones(rows, seq_len, dtype=torch.int64)})
    return {"model": model, "batches": batches, "name": "tail_error_moe", "top_k": top_k, "num_experts": experts}
