"""A small numpy port of Megatron-Core's MoE routing and token dropping, for checking moebench.

Follows megatron/core/transformer/moe/moe_utils.py of NVIDIA/Megatron-LM at commit
00611e6eeb0b09b5ee074750956855215ddbd67f: get_capacity, group_limited_topk,
topk_routing_with_score_function (unfused, no router replay), apply_router_token_dropping
(pad_to_capacity=False) and get_updated_expert_bias; and router.py's bias counting
(local_tokens_per_expert += routing_map.sum(0) after token dropping). Written from reading that
file, not copied; float32 as Megatron computes (logits are fp32 here, so type_as is a no-op).

torch.topk leaves the order of equal values unspecified; this port breaks ties the way moebench
documents (the lower expert index inside a token, the lower token index inside an expert), which is
what CPU torch.topk does in practice for these inputs.
"""
import math

import numpy as np


def get_capacity(num_tokens, num_experts, capacity_factor, min_capacity=None):
    capacity = math.ceil((num_tokens / num_experts) * capacity_factor)
    if min_capacity is not None and capacity < min_capacity:
        capacity = min_capacity
    return capacity


def _topk_rows(scores, k):
    """Indices of the k largest per row, largest first, ties to the lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def group_limited_topk(scores, topk, num_groups, group_topk):
    """Groups scored by the sum of their top (topk // group_topk) scores; the group_topk best kept."""
    n, e = scores.shape
    per = topk // group_topk
    grouped = scores.reshape(n, num_groups, e // num_groups)
    top_in_group = -np.sort(-grouped, axis=2)[:, :, :per]
    group_scores = top_in_group.sum(axis=2, dtype=np.float32)
    keep = _topk_rows(group_scores, group_topk)
    group_mask = np.zeros((n, num_groups), dtype=bool)
    np.put_along_axis(group_mask, keep, True, axis=1)
    score_mask = np.repeat(group_mask, e // num_groups, axis=1)
    masked = np.where(score_mask, scores, np.float32(-np.inf))
    idx = _topk_rows(masked, topk)
    return np.take_along_axis(masked, idx, axis=1), idx


def _softmax(x):
    x = x.astype(np.float32)
    m = x.max(axis=-1, keepdims=True)
    ex = np.exp(x - m)
    return ex / ex.sum(axis=-1, keepdims=True)


def _sigmoid(x):
    return (np.float32(1) / (np.float32(1) + np.exp(-x.astype(np.float32)))).astype(np.float32)


def topk_routing_with_score_function(logits, topk, use_pre_softmax=False, num_groups=None, group_topk=None,
                                     scaling_factor=None, score_function="softmax", expert_bias=None):
    """Returns (routing_probs [T, E], routing_map [T, E] bool)."""
    n, e = logits.shape

    def compute_topk(scores):
        if group_topk:
            return group_limited_topk(scores, topk, num_groups, group_topk)
        idx = _topk_rows(scores, topk)
        return np.take_along_axis(scores, idx, axis=1), idx

    if score_function == "softmax":
        if use_pre_softmax:
            probs, idx = compute_topk(_softmax(logits))
        else:
            top, idx = compute_topk(logits.astype(np.float32))
            probs = _softmax(top)
    elif score_function == "sigmoid":
        scores = _sigmoid(logits)
        if expert_bias is not None:
            _, idx = compute_topk(scores + expert_bias.astype(np.float32))
            scores = np.take_along_axis(scores, idx, axis=1)
        else:
            scores, idx = compute_topk(scores)
        probs = scores / (scores.sum(axis=-1, keepdims=True) + np.float32(1e-20)) if topk > 1 else scores
    else:
        raise ValueError(score_function)
    if scaling_factor:
        probs = probs * np.float32(scaling_factor)
    routing_probs = np.zeros((n, e), dtype=np.float32)
    np.put_along_axis(routing_probs, idx, probs.astype(np.float32), axis=1)
    routing_map = np.zeros((n, e), dtype=bool)
    np.put_along_axis(routing_map, idx, True, axis=1)
    return routing_probs, routing_map


def apply_router_token_dropping(routing_probs, routing_map, router_topk, capacity_factor, drop_policy="probs"):
    """Returns (final_probs, final_map) with pad_to_capacity=False."""
    num_tokens, num_experts = routing_probs.shape
    capacity = get_capacity(num_tokens * router_topk, num_experts, capacity_factor)
    if capacity > num_tokens:
        mask = np.ones_like(routing_map)
    else:
        key = routing_probs if drop_policy == "probs" else routing_map.astype(np.int32)
        if drop_policy not in ("probs", "position"):
            raise ValueError(drop_policy)
        # The capacity largest per expert (column), equal keys to the lower token index.
        order = np.argsort(-key, axis=0, kind="stable")[:capacity]
        mask = np.zeros_like(routing_map)
        np.put_along_axis(mask, order, True, axis=0)
    final_map = np.logical_and(routing_map, mask)
    return routing_probs * final_map, final_map


def get_updated_expert_bias(tokens_per_expert, expert_bias, rate):
    average = tokens_per_expert.sum() / tokens_per_expert.shape[0]
    offset = average - tokens_per_expert
    return (expert_bias + np.sign(offset).astype(np.float32) * np.float32(rate)).astype(np.float32)
