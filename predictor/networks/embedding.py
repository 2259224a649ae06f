"""The shared input encoder ("Embedding&MLP" bottom) and the small blocks every model reuses.

Every model, M2M and baselines alike, embeds the same batch the same way (paper 5.1.3: the
baselines get the scenario features as inputs too), so comparisons measure the architectures
and not the input handling:

- each discretised channel of the behaviour and performance sequences has its own embedding
  table of width d_input (16 in the paper); the channels of one day are concatenated into one
  token per day: behaviour [B, T, NB * d_input], performance [B, T, NP * d_input];
- a linear day projection, shared by the days of a sequence, maps each day's token to d_day
  (16) before the days are flattened, so the first dense layer sees T * 2 * d_day inputs
  rather than T * (NB + NP) * d_input: about 6 times fewer weights in the layer that holds most
  of every model's parameters and inference cost, and a per-day summary the days share;
- the categorical profile fields are embedded the same way, and together with the numeric
  profile (A) and the scenario vector (S) form the static vector [B, NS + NC * d_input + NN];
- `flat()` is the Embedding&MLP input: both projected sequences flattened plus the static vector.

The day projection of a concatenation of table look-ups is a sum of projected table rows
(`ChannelEmbedding.project`), so the [B, T, C * d_input] day tokens are never formed on the
way to `flat()`.

The blocks below (`ExpertBank`, `GroupedLinear`, `TaskTowers`) keep per-expert and per-task
weights in stacked tensors so that k experts or M towers cost one batched matmul, not a Python
loop over modules.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from predictor.networks.spec import InputSpec

NEGATIVE_SLOPE = 0.01  # LeakyReLU everywhere (5.1.3)
# softplus(x) = 1 at x = log(e - 1): output biases start at a rate of 1, the mean of a
# target normalised by its per-task scale, so the first steps do not fight a bad offset.
UNIT_RATE_BIAS = math.log(math.e - 1.0)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def mlp(d_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Linear + LeakyReLU for every width; an empty `widths` is the identity."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(d_in, width), nn.LeakyReLU(NEGATIVE_SLOPE)]
        d_in = width
    return nn.Sequential(*layers)


class ChannelEmbedding(nn.Module):
    """One embedding table per channel, stored as one table with per-channel row offsets."""

    def __init__(self, cardinalities: tuple[int, ...], dim: int) -> None:
        super().__init__()
        offsets = torch.tensor((0, *cardinalities[:-1])).cumsum(0)
        self.cardinalities = cardinalities
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(sum(cardinalities), dim)
        nn.init.normal_(self.table.weight, std=0.1)
        self.width = len(cardinalities) * dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids [..., C] -> [..., C * dim]: the channels of one position side by side
        return self.table(ids + self.offsets).flatten(-2)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """Every channel's table times its block of `weight` [C * dim, n]: [sum(bins), n].

        A linear map of the concatenated channel embeddings is the sum over channels of these
        rows, looked up by id (see `project_lookup`).
        """
        tables = self.table.weight.split(list(self.cardinalities))  # C x [bins_c, dim]
        blocks = weight.split(self.table.embedding_dim)  # C x [dim, n]
        return torch.cat([t @ w for t, w in zip(tables, blocks, strict=True)])

    def project_lookup(self, ids: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        """forward(ids) @ weight without forming forward(ids): [..., C] -> [..., n]."""
        flat = (ids + self.offsets).reshape(-1, ids.shape[-1])  # [N, C]: one row per channel
        return _SumOfRows.apply(flat, projected).view(*ids.shape[:-1], -1)


class _SumOfRows(torch.autograd.Function):
    """out[n] = sum_c table[ids[n, c]]: embedding_bag forward, a per-channel index_add backward.

    embedding_bag's own backward sorts all N * C ids; adding each channel's gradient rows with
    index_add_ is about twice as fast on CPU and gives the same sums.
    """

    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.n_rows = table.shape[0]
        return F.embedding_bag(ids, table, mode="sum")  # [N, n]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (ids,) = ctx.saved_tensors
        grad = grad.contiguous()
        table_grad = grad.new_zeros(ctx.n_rows, grad.shape[1])
        for c in range(ids.shape[1]):  # C channels, a handful
            table_grad.index_add_(0, ids[:, c], grad)
        return None, table_grad


class FeatureEncoder(nn.Module):
    """Embeds a batch (interfaces: the batch contract) into sequences and a static vector."""

    def __init__(self, spec: InputSpec, d_input: int, d_day: int | None) -> None:
        """d_day=None: no day projection and no `flat()`, for a model that reads the channels."""
        super().__init__()
        self.spec = spec
        self.behaviour = ChannelEmbedding(spec.behaviour_bins, d_input)
        self.performance = ChannelEmbedding(spec.performance_bins, d_input)
        self.profile = ChannelEmbedding(spec.profile_cardinalities, d_input)
        self.n_static = spec.n_scenario + self.profile.width + spec.n_profile_num
        if d_day is not None:
            self.day_b = nn.Linear(self.behaviour.width, d_day)  # day projection of X_b
            self.day_p = nn.Linear(self.performance.width, d_day)  # day projection of X_p
            self.n_flat = spec.seq_len * 2 * d_day + self.n_static

    def sequences(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Day tokens of X_b [B, T, NB * d_input] and X_p [B, T, NP * d_input] (4.1.1)."""
        return self.behaviour(batch["behaviour"]), self.performance(batch["performance"])

    def projected_days(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Day projections of X_b and X_p, [B, T, d_day] each, by projected-row look-ups."""
        return (
            _project_days(self.behaviour, self.day_b, batch["behaviour"]),
            _project_days(self.performance, self.day_p, batch["performance"]),
        )

    def static(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scenario attributes S and advertiser profile A side by side: [B, n_static]."""
        profile = self.profile(batch["profile_cat"])  # [B, NC * d_input]
        return torch.cat([batch["scenario"], profile, batch["profile_num"]], dim=-1)

    def flat(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Embedding&MLP input: both projected sequences flattened over days, then S and A."""
        zb, zp = self.projected_days(batch)  # [B, T, d_day] each
        return torch.cat([zb.flatten(1), zp.flatten(1), self.static(batch)], dim=-1)


def _project_days(
    embedding: ChannelEmbedding, projection: nn.Linear, ids: torch.Tensor
) -> torch.Tensor:
    """projection(embedding(ids)) as a sum of projected rows: [B, T, C] -> [B, T, d_day]."""
    rows = embedding.project(projection.weight.T)  # [sum(bins), d_day]
    return embedding.project_lookup(ids, rows) + projection.bias


class GroupedLinear(nn.Module):
    """G independent linear maps applied to [B, G, d_in] in one batched matmul."""

    def __init__(self, groups: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per group
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, G, d_in] -> [G, B, d_in] @ [G, d_in, d_out] -> [B, G, d_out]
        out = torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight)
        return out.transpose(0, 1)


class ExpertBank(nn.Module):
    """k expert MLPs on one shared input (eq. 6 for M2M; the experts of MMoE and CGC).

    The first layers of all experts are one wide Linear (the input is the same), the second
    layers a grouped matmul, so k experts cost two GEMMs.
    """

    def __init__(self, d_in: int, n_experts: int, d_view: int) -> None:
        super().__init__()
        self.n_experts, self.d_view = n_experts, d_view
        self.first = nn.Linear(d_in, n_experts * d_view)
        self.second = GroupedLinear(n_experts, d_view, d_view)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = act(self.first(x)).unflatten(-1, (self.n_experts, self.d_view))  # [B, k, d_view]
        return act(self.second(hidden))  # [B, k, d_view]


class TaskTowers(nn.Module):
    """M per-task MLP towers ending in a positive rate: [B, M, d_in] -> [B, M].

    The rate is softplus of the last linear output (the Poisson mean of eq. 20 must be > 0).
    """

    def __init__(self, n_tasks: int, d_in: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers = []
        for width in hidden:
            layers.append(GroupedLinear(n_tasks, d_in, width))
            d_in = width
        self.hidden = nn.ModuleList(layers)
        self.d_out = d_in  # width of `represent`'s output
        self.out = GroupedLinear(n_tasks, d_in, 1)
        nn.init.constant_(self.out.bias, UNIT_RATE_BIAS)

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The towers' hidden layers: [B, M, d_in] -> [B, M, d_out]."""
        for layer in self.hidden:
            x = act(layer(x))  # [B, M, width]
        return x

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.out(h).squeeze(-1))  # [B, M]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rate(self.represent(x))  # [B, M]


def dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V (eq. 2) per head: q [*, N, d], k and v [*, N', d] -> [*, N, d].

    Written out as two batched matmuls rather than F.scaled_dot_product_attention: at these
    sizes (tens of tokens, heads of 16) the fused CPU kernel is several times slower, a
    training step of both M2M sequences forward and backward about twice as slow
    (bench/train.py), and the N x N' score matrices are small enough to hold anyway.
    """
    lead, n, d = q.shape[:-2], q.shape[-2], q.shape[-1]
    q3, k3, v3 = q.reshape(-1, n, d), k.reshape(-1, k.shape[-2], d), v.reshape(-1, *v.shape[-2:])
    scores = torch.bmm(q3, k3.transpose(1, 2)).mul_(d**-0.5)  # [*, N, N']
    return torch.bmm(torch.softmax(scores, dim=-1), v3).view(*lead, n, v.shape[-1])


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over tokens (eq. 2-4 of the paper).

    [B, N, d_model] -> [B, N, d_out]. Q, K and V keep the token width (4.1.2: "equal-dimensional
    linear projects"); W^H maps the concatenated heads to d_out (d_model when not given). No
    non-linearity and no residual here: callers add the residual where they want one.
    """

    def __init__(self, d_model: int, n_heads: int, d_out: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"token width {d_model} is not divisible by {n_heads} heads.")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)  # W^Q, W^K, W^V of every head (eq. 4)
        self.out = nn.Linear(d_model, d_out or d_model)  # W^H (eq. 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, n, d = x.shape
        qkv = self.qkv(x).view(bsz, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        heads = dot_product_attention(q, k, v)  # eq. 2, 4: [B, h, N, d/h]
        return self.out(heads.transpose(1, 2).reshape(bsz, n, d))  # eq. 3: [B, N, d_out]
