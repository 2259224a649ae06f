"""M2M: Multi-Scenario Multi-Task meta learning for advertiser modelling (paper section 4).

Data flow for B samples, M tasks, k experts (shapes in the comments of `M2M.forward`):

  backbone (4.1)      day tokens of X_b, X_p  -> self-attention per sequence -> F        eq. 2-5
                      [F || S || A]           -> k expert views E_i                        eq. 6
                      task ids                -> task views T_t                            eq. 7
                      [S || A]                -> scenario knowledge S~                     eq. 8
  meta attention      a_ti = v^T Meta([E_i || T_t]), softmax over i, R_t = sum a_ti E_i  eq. 14-16
  meta tower          L_t^0 = R_t, L_t^j = sigma(Meta^(j-1)(L_t^(j-1)) + L_t^(j-1))      eq. 17-18
  output              per-task linear head, softplus -> positive Poisson rate              eq. 20
  distribution        quantile and beta-binomial heads on the detached L_t (networks.distribution)

Choices where the paper is silent (each is also noted at the line that makes it):
- A day's channel embeddings (d_input each) are mapped by a linear day projection, shared by
  the days, to one day vector of width d_day ("fixed-size low-dimensional vectors of each time
  sequence", 4.1.1); the baselines' flat input uses the same day vectors. A trainable position
  embedding is concatenated (not added) to form the token, as 4.1.1 says. Q, K, V keep the
  token width; W^H maps the heads back to d_day and the result is added to the day vector
  (the residual of [36]). The residual is linear, so no non-linear unit is added (4.1.2), and
  it lets a day's own values through while attention is still spread evenly early in training.
- F flattens the T attended days in order ("a fixed-length vector", 4.1.2): when in the window
  an advertiser was active is what predicts the next week, and pooling over days would lose
  it. F has the width of the baselines' flat input, so the experts cost the same as MMoE's.
- [E_i || T_t] (512 wide) and R_t (256) are projected to d linearly before their meta units,
  and the projection of the concatenation is computed as P_E E_i + P_T T_t (the same linear
  map, split by blocks), so k + M rows are projected instead of k * M.
- One meta-attention unit shared by the tasks by default: T_t is part of its input, so the
  attention still differs per task, with M times fewer generator parameters; set
  `meta_attention_per_task` for one Meta_t per task as eq. 14 writes it.
- The tower's meta units are indexed by layer j only (eq. 18), shared by the tasks, whose
  separate heads come after the tower.
- Ablations (5.3.1): without meta attention / meta tower, the meta units become ordinary
  layers of the same shape (the "traditional" attention and "simple shared feed-forward
  network" the paper contrasts them with); without the transformer, F is the flattened day
  embedding the baselines use.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from predictor.networks.distribution import DistributionalModel, DistributionHead
from predictor.networks.embedding import (
    UNIT_RATE_BIAS,
    ExpertBank,
    FeatureEncoder,
    GroupedLinear,
    act,
    dot_product_attention,
)
from predictor.networks.meta import MetaUnit, StaticUnit
from predictor.networks.spec import InputSpec, M2MConfig


class DaySelfAttention(nn.Module):
    """Multi-head self-attention over the days of one sequence (eq. 2-4), residual added.

    A day's token is [day vector || trainable position embedding] (4.1.1: the day's channel
    embeddings in one fixed-size low-dimensional vector, positions concatenated, not added).
    Q, K and V keep the token width ("equal-dimensional linear projects", 4.1.2); W^H maps the
    heads back to the day vector's width, which the residual adds to.

    The token is a concatenation, so its projection is split by blocks: [Q K V](token) =
    days W_d + (P W_p + bias)[t], the position part computed once per step for all samples.
    """

    def __init__(self, d_day: int, seq_len: int, d_pos: int, n_heads: int) -> None:
        super().__init__()
        d_model = d_day + d_pos
        if d_model % n_heads:
            raise ValueError(f"token width {d_model} is not divisible by {n_heads} heads.")
        self.n_heads, self.d_day, self.d_model = n_heads, d_day, d_model
        self.positions = nn.Parameter(torch.randn(seq_len, d_pos) * 0.1)  # 4.1.1
        self.qkv = nn.Linear(d_model, 3 * d_model)  # W^Q, W^K, W^V of every head (eq. 4)
        self.out = nn.Linear(d_model, d_day)  # W^H (eq. 3)

    def forward(self, days: torch.Tensor) -> torch.Tensor:
        """days [B, T, d_day] -> days + MultiHead(tokens) [B, T, d_day] (eq. 2-4, residual)."""
        bsz, t, _ = days.shape
        weight = self.qkv.weight.T  # [d_model, 3 d_model]: rows for the day, then the position
        per_day = self.positions @ weight[self.d_day :] + self.qkv.bias  # [T, 3 d_model]
        qkv = (days @ weight[: self.d_day] + per_day).view(bsz, t, 3, self.n_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, T, d_model / h] each
        heads = dot_product_attention(q, k, v)  # eq. 2, 4: [B, h, T, d_model / h]
        mh = self.out(heads.transpose(1, 2).reshape(bsz, t, self.d_model))  # eq. 3
        return days + mh  # [B, T, d_day]


class M2M(DistributionalModel):
    kind = "m2m"

    def __init__(self, spec: InputSpec, config: M2MConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        c, m = config, spec.n_tasks
        self.encoder = FeatureEncoder(spec, c.d_input, c.d_day)
        if c.use_transformer:
            self.attn_b = DaySelfAttention(c.d_day, spec.seq_len, c.d_input, c.n_heads)
            self.attn_p = DaySelfAttention(c.d_day, spec.seq_len, c.d_input, c.n_heads)
        self.experts = ExpertBank(self.encoder.n_flat, c.n_experts, c.d_view)
        self.task_ids = nn.Embedding(m, c.d_task_embedding)
        self.task_mlp = nn.Linear(c.d_task_embedding, c.d_view)
        self.scenario_mlp = nn.Linear(self.encoder.n_static, c.d_meta)

        self.attn_proj_e = nn.Linear(c.d_view, c.d_meta)  # P_E block of the [E || T] projection
        self.attn_proj_t = nn.Linear(c.d_view, c.d_meta, bias=False)  # P_T block
        groups = m if c.meta_attention_per_task else 1
        self.attn_unit: nn.Module = (
            MetaUnit(
                c.d_meta, c.d_meta, c.meta_layers, groups=groups, contraction=c.meta_contraction
            )
            if c.use_meta_attention
            else StaticUnit(c.d_meta, c.meta_layers)
        )
        self.attn_v = nn.Linear(c.d_meta, 1, bias=False)  # v of eq. 14

        self.tower_proj = nn.Linear(c.d_view, c.d_meta)
        self.tower_units = nn.ModuleList(
            MetaUnit(c.d_meta, c.d_meta, c.meta_layers, contraction=c.meta_contraction)
            if c.use_meta_tower
            else StaticUnit(c.d_meta, c.meta_layers)
            for _ in range(c.tower_layers)
        )
        self.heads = GroupedLinear(m, c.d_meta, 1)
        nn.init.constant_(self.heads.bias, UNIT_RATE_BIAS)
        self.distribution = DistributionHead(spec, c.d_meta)  # last: see networks.distribution

    def features(self, batch: dict[str, torch.Tensor], static: torch.Tensor) -> torch.Tensor:
        """F (eq. 5) flattened over days, with the dense S and A appended (4.1.3): [B, n_flat]."""
        zb, zp = self.encoder.projected_days(batch)  # day vectors of X_b, X_p: [B, T, d_day]
        if self.config.use_transformer:  # else ablation "w/o TL": the baselines' flat input
            zb, zp = self.attn_b(zb), self.attn_p(zp)  # eq. 2-4: [B, T, d_day] each
        return torch.cat([zb.flatten(1), zp.flatten(1), static], dim=-1)  # eq. 5: [B, n_flat]

    def task_views(self) -> torch.Tensor:
        return act(self.task_mlp(self.task_ids.weight))  # eq. 7: T [M, d_view]

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Everything up to the output layer: the meta tower's L_t [B, M, d]."""
        static = self.encoder.static(batch)  # S and A: [B, n_static]
        s = act(self.scenario_mlp(static))  # eq. 8: S~ [B, d]
        experts = self.experts(self.features(batch, static))  # eq. 6: E [B, k, d_view]
        tasks = self.task_views()  # eq. 7: T [M, d_view]

        # [E_i || T_t] projected to d, by blocks: P_E E_i + P_T T_t
        pe = self.attn_proj_e(experts)  # [B, k, d]
        pt = self.attn_proj_t(tasks)  # [M, d]
        pair = pe.unsqueeze(1) + pt[None, :, None, :]  # [B, M, k, d]
        scores = self.attn_v(self.attn_unit(pair, s)).squeeze(-1)  # eq. 14: a [B, M, k]
        alpha = torch.softmax(scores, dim=-1)  # eq. 15: [B, M, k]
        r = torch.matmul(alpha, experts)  # eq. 16: R_t = sum_i alpha_ti E_i, [B, M, d_view]

        tower = self.tower_proj(r)  # eq. 17: L^0 = R_t, projected to d (linear): [B, M, d]
        for unit in self.tower_units:
            tower = act(unit(tower, s) + tower)  # eq. 18: [B, M, d]
        return tower

    def rate(self, h: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.heads(h).squeeze(-1))  # eq. 20: positive rate [B, M]
