"""The paper's baselines (5.1.2), all on the same Embedding&MLP input as M2M's backbone.

Every model embeds the batch with `FeatureEncoder` (scenario features included, as 5.1.3
requires of the base models) and ends in per-task positive rates [B, M], read from a per-task
representation [B, M, d] that the distribution heads read too (networks.distribution):

- SingleTask: one independent Embedding&MLP per task.
- SharedBottom: one shared MLP, then per-task towers.
- CrossStitch (Misra et al. 2016): one MLP column per task, with learned linear cross-stitch
  units mixing the columns after every hidden layer.
- MMoE (Ma et al. 2018): k shared experts, one softmax gate per task, per-task towers.
- MRAN (Zhao et al. 2019), compact: feature fields -> multi-head self-attention
  (feature-feature relations), task embeddings -> self-attention (task-task relations), then
  every task attends over the fields (task-feature dependence) and feeds its tower.
- CGC (Tang et al. 2020, one extraction layer of PLE): shared experts plus task-specific
  experts, one gate per task over the shared experts and its own.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from predictor.networks.distribution import DistributionalModel, DistributionHead
from predictor.networks.embedding import (
    UNIT_RATE_BIAS,
    ExpertBank,
    FeatureEncoder,
    GroupedLinear,
    SelfAttention,
    TaskTowers,
    act,
    dot_product_attention,
    mlp,
)
from predictor.networks.spec import (
    CGCConfig,
    CrossStitchConfig,
    InputSpec,
    MMoEConfig,
    MRANConfig,
    SharedBottomConfig,
    SingleTaskConfig,
)


class _EmbeddingMLP(nn.Module):
    """One single-task Embedding&MLP: its own embeddings, MLP and positive output."""

    def __init__(self, spec: InputSpec, config: SingleTaskConfig) -> None:
        super().__init__()
        self.encoder = FeatureEncoder(spec, config.d_input, config.d_day)
        self.body = mlp(self.encoder.n_flat, config.hidden)
        self.out = nn.Linear(config.hidden[-1] if config.hidden else self.encoder.n_flat, 1)
        nn.init.constant_(self.out.bias, UNIT_RATE_BIAS)
        self.d_out = config.hidden[-1] if config.hidden else self.encoder.n_flat

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.body(self.encoder.flat(batch))  # [B, d_out]

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.out(h)).squeeze(-1)  # [B]


class SingleTask(DistributionalModel):
    """M independent Embedding&MLP networks in one module, so the trainer treats it like the rest.

    No parameter is shared between the per-task nets, and the joint loss is a sum of per-task
    terms, so each net's gradient is exactly the gradient of its own task's loss (times
    lambda_t). Adam scales every parameter's update by that parameter's own moment estimates,
    which makes joint training equal to training each net separately (the lambda_t factor
    cancels up to Adam's eps). Element-wise gradient clipping keeps this; clipping by the
    global norm of all parameters would couple the nets.
    """

    kind = "single_task"

    def __init__(self, spec: InputSpec, config: SingleTaskConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.nets = nn.ModuleList(_EmbeddingMLP(spec, config) for _ in spec.tasks)
        self.distribution = DistributionHead(spec, self.nets[0].d_out)

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([net.represent(batch) for net in self.nets], dim=1)  # [B, M, d]

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([net.rate(h[:, i]) for i, net in enumerate(self.nets)], dim=-1)


class SharedBottom(DistributionalModel):
    kind = "shared_bottom"

    def __init__(self, spec: InputSpec, config: SharedBottomConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.encoder = FeatureEncoder(spec, config.d_input, config.d_day)
        self.bottom = mlp(self.encoder.n_flat, config.bottom)
        d_bottom = config.bottom[-1] if config.bottom else self.encoder.n_flat
        self.towers = TaskTowers(spec.n_tasks, d_bottom, config.tower)
        self.distribution = DistributionHead(spec, self.towers.d_out)

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        shared = self.bottom(self.encoder.flat(batch))  # [B, d_bottom]
        return self.towers.represent(shared.unsqueeze(1).expand(-1, self.spec.n_tasks, -1))

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return self.towers.rate(h)  # [B, M]


class CrossStitch(DistributionalModel):
    """Per-task MLP columns; after each hidden layer x_t <- sum_u alpha[t, u] x_u (learned)."""

    kind = "cross_stitch"

    def __init__(self, spec: InputSpec, config: CrossStitchConfig) -> None:
        super().__init__()
        if not config.hidden:
            raise ValueError("cross_stitch needs at least one hidden layer to stitch.")
        self.spec, self.config = spec, config
        m, widths = spec.n_tasks, config.hidden
        self.encoder = FeatureEncoder(spec, config.d_input, config.d_day)
        self.first = nn.Linear(self.encoder.n_flat, m * widths[0])  # all columns' first layers
        self.layers = nn.ModuleList(
            GroupedLinear(m, d_in, d_out) for d_in, d_out in itertools.pairwise(widths)
        )
        off = (1.0 - config.stitch_self) / (m - 1) if m > 1 else 0.0
        stitch = torch.full((m, m), off) + torch.eye(m) * (
            (config.stitch_self if m > 1 else 1.0) - off
        )
        self.stitches = nn.ParameterList(nn.Parameter(stitch.clone()) for _ in widths)
        self.out = GroupedLinear(m, widths[-1], 1)
        nn.init.constant_(self.out.bias, UNIT_RATE_BIAS)
        self.distribution = DistributionHead(spec, widths[-1])

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m, d0 = self.spec.n_tasks, self.config.hidden[0]
        x = act(self.first(self.encoder.flat(batch))).view(-1, m, d0)  # [B, M, h_1]
        x = torch.matmul(self.stitches[0], x)  # cross-stitch: [B, M, h_1]
        for layer, stitch in zip(self.layers, self.stitches[1:], strict=True):
            x = torch.matmul(stitch, act(layer(x)))  # [B, M, h_l]
        return x

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.out(h).squeeze(-1))  # [B, M]


class MMoE(DistributionalModel):
    kind = "mmoe"

    def __init__(self, spec: InputSpec, config: MMoEConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.encoder = FeatureEncoder(spec, config.d_input, config.d_day)
        self.experts = ExpertBank(self.encoder.n_flat, config.n_experts, config.d_view)
        self.gates = nn.Linear(self.encoder.n_flat, spec.n_tasks * config.n_experts)
        self.towers = TaskTowers(spec.n_tasks, config.d_view, config.tower)
        self.distribution = DistributionHead(spec, self.towers.d_out)

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.encoder.flat(batch)  # [B, n_flat]
        experts = self.experts(x)  # [B, k, d_view]
        gates = self.gates(x).view(-1, self.spec.n_tasks, self.config.n_experts)  # [B, M, k]
        mixed = torch.matmul(torch.softmax(gates, dim=-1), experts)  # [B, M, d_view]
        return self.towers.represent(mixed)  # [B, M, d]

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return self.towers.rate(h)  # [B, M]


class CGC(DistributionalModel):
    """Customized Gate Control: task t's gate mixes the shared experts and t's own experts."""

    kind = "cgc"

    def __init__(self, spec: InputSpec, config: CGCConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        m, n_s, n_t = spec.n_tasks, config.n_shared_experts, config.n_task_experts
        self.encoder = FeatureEncoder(spec, config.d_input, config.d_day)
        # experts 0..n_s-1 are shared, then n_t experts for task 0, n_t for task 1, ...
        self.experts = ExpertBank(self.encoder.n_flat, n_s + m * n_t, config.d_view)
        own = torch.arange(m * n_t).view(m, n_t) + n_s  # [M, n_t]
        shared = torch.arange(n_s).expand(m, n_s)  # [M, n_s]
        self.register_buffer("selected", torch.cat([shared, own], dim=1), persistent=False)
        self.gates = nn.Linear(self.encoder.n_flat, m * (n_s + n_t))
        self.towers = TaskTowers(m, config.d_view, config.tower)
        self.distribution = DistributionHead(spec, self.towers.d_out)

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.encoder.flat(batch)  # [B, n_flat]
        experts = self.experts(x)[:, self.selected]  # [B, M, n_s + n_t, d_view]
        gates = torch.softmax(self.gates(x).view(-1, *self.selected.shape), dim=-1)  # [B, M, e]
        mixed = torch.einsum("bme,bmed->bmd", gates, experts)  # [B, M, d_view]
        return self.towers.represent(mixed)  # [B, M, d]

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return self.towers.rate(h)  # [B, M]


class MRAN(DistributionalModel):
    """Multiple Relational Attention Network, compact.

    Fields: every sequence channel (its T day embeddings, projected to d_model), the scenario
    vector and the profile (each projected). Feature-feature relations: self-attention over the
    fields. Task-task relations: self-attention over the task embeddings. Task-feature
    dependence: each task token attends over the fields; the result feeds the task's tower.
    """

    kind = "mran"

    def __init__(self, spec: InputSpec, config: MRANConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        d, t, d_in = config.d_model, spec.seq_len, config.d_input
        self.encoder = FeatureEncoder(spec, d_in, d_day=None)  # fields, no flat input
        self.n_channels = spec.n_behaviour + spec.n_performance
        self.channel_proj = GroupedLinear(self.n_channels, t * d_in, d)
        self.scenario_proj = nn.Linear(spec.n_scenario, d)
        self.profile_proj = nn.Linear(self.encoder.n_static - spec.n_scenario, d)
        self.field_attention = SelfAttention(d, config.n_heads)
        self.task_tokens = nn.Parameter(torch.randn(spec.n_tasks, d) * 0.1)
        self.task_attention = SelfAttention(d, config.n_heads)
        self.query = nn.Linear(d, d)
        self.key_value = nn.Linear(d, 2 * d)
        self.towers = TaskTowers(spec.n_tasks, 2 * d, config.tower)
        self.distribution = DistributionHead(spec, self.towers.d_out)

    def fields(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        xb, xp = self.encoder.sequences(batch)  # [B, T, NB * d_in], [B, T, NP * d_in]
        days = torch.cat([xb, xp], dim=-1)  # [B, T, C * d_in]
        bsz, t, _ = days.shape
        per_channel = days.view(bsz, t, self.n_channels, -1).transpose(1, 2).flatten(2)
        channels = act(self.channel_proj(per_channel))  # [B, C, d]
        static = self.encoder.static(batch)
        n_s = self.spec.n_scenario
        scenario = act(self.scenario_proj(static[:, :n_s])).unsqueeze(1)  # [B, 1, d]
        profile = act(self.profile_proj(static[:, n_s:])).unsqueeze(1)  # [B, 1, d]
        return torch.cat([channels, scenario, profile], dim=1)  # [B, C + 2, d]

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fields = self.fields(batch)  # [B, n_fields, d]
        fields = fields + self.field_attention(fields)  # feature-feature relations
        tokens = self.task_tokens.unsqueeze(0)  # [1, M, d]
        tasks = (tokens + self.task_attention(tokens)).squeeze(0)  # task-task relations: [M, d]
        keys, values = self.key_value(fields).chunk(2, dim=-1)  # [B, n_fields, d] each
        query = self.query(tasks).expand(fields.shape[0], -1, -1)  # [B, M, d]
        attended = dot_product_attention(query, keys, values)  # task-feature: [B, M, d]
        task_input = torch.cat([attended, tasks.expand_as(attended)], dim=-1)  # [B, M, 2d]
        return self.towers.represent(task_input)  # [B, M, d]

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return self.towers.rate(h)  # [B, M]
