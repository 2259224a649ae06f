"""M2M: Multi-Scenario Multi-Task meta learning for advertiser modelling (paper section 4).

Data flow for B samples, M tasks, k experts (shapes in the comments of `M2M.forward`):

  backbone (4.1)      day tokens of X_b, X_p  -> self-attention per sequence -> F        eq. 2-5
                      [F || S || A]           -> k expert views E_i                        eq. 6
                      task ids                -> task views T_t                            eq. 7
                      [S || A]                -> scenario knowledge S~                     eq. 8
  meta attention      a_ti = v^T Meta([E_i || T_t]), softmax over i, R_t = sum a_ti E_i  eq. 14-16
  meta tower          L_t^0 = R_t, L_t^j = sigma(Meta^(j-1)(L_t^(j-1)) + L_t^(j-1))      eq. 17-18
  output              per-task linear head, softplus -> positive Poisson rate              eq. 20

Choices where the paper is silent (each is also noted at the line that makes it):
- A day's token is the concatenation of its channels' embeddings (d_input each), with a
  trainable position embedding concatenated (not added) as 4.1.1 says. Q, K, V keep the token
  width; W^H maps the heads back to the day embedding's width and the result is added to it
  (the residual of [36]). The residual is linear, so no non-linear unit is added (4.1.2), and
  it lets a day's own values through while attention is still spread evenly early in training.
- F flattens the T attended days in order ("a fixed-length vector", 4.1.2): when in the window
  an advertiser was active is what predicts the next week, and pooling over days would lose
  it. F then has the width of the baselines' flat input, so the experts cost the same as MMoE's.
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

from predictor.networks.embedding import (
    UNIT_RATE_BIAS,
    ChannelEmbedding,
    ExpertBank,
    FeatureEncoder,
    GroupedLinear,
    act,
)
from predictor.networks.meta import MetaUnit, StaticUnit
from predictor.networks.spec import InputSpec, M2MConfig


class DaySelfAttention(nn.Module):
    """Multi-head self-attention over the days of one sequence (eq. 2-4), residual added.

    A day's token is [channel embeddings || trainable position embedding] (4.1.1, positions
    concatenated, not added). Q, K and V keep the token width ("equal-dimensional linear
    projects", 4.1.2); W^H maps the heads back to the width of the day embedding, which the
    residual adds to: positions steer the attention, and F is as wide as the baselines' input.
    The residual of [36] is linear, so no non-linear unit is added, as 4.1.2 asks.

    Q, K, V are linear in the token and the token is a concatenation of table look-ups, so
    [Q K V](token) = sum_c (E_c W_c)[id_c] + (P W_pos)[t] + bias. The projection is applied to
    the small embedding tables once per step and each token sums its looked-up rows, instead of
    a [B*T, d] x [d, 3d] GEMM: the same function and parameters, about half the CPU time.
    `qkv_literal` is the plain form, kept for the test that checks the two agree.
    """

    def __init__(self, embedding: ChannelEmbedding, seq_len: int, d_pos: int, n_heads: int):
        super().__init__()
        d_model = embedding.width + d_pos
        if d_model % n_heads:
            raise ValueError(f"token width {d_model} is not divisible by {n_heads} heads.")
        self.n_heads, self.d_model = n_heads, d_model
        self.positions = nn.Parameter(torch.randn(seq_len, d_pos) * 0.1)  # 4.1.1
        self.qkv = nn.Linear(d_model, 3 * d_model)  # W^Q, W^K, W^V of every head (eq. 4)
        self.out = nn.Linear(d_model, embedding.width)  # W^H (eq. 3)

    def qkv_fast(self, ids: torch.Tensor, embedding: ChannelEmbedding) -> torch.Tensor:
        weight = self.qkv.weight.T  # [d_model, 3 d_model]: rows for channels, then positions
        n_content = embedding.width
        per_row = embedding.project(weight[:n_content])  # [sum(bins), 3 d_model]
        per_day = self.positions @ weight[n_content:] + self.qkv.bias  # [T, 3 d_model]
        return embedding.project_lookup(ids, per_row) + per_day  # [B, T, 3 d_model]

    def qkv_literal(self, days: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([days, self.positions.expand(days.shape[0], -1, -1)], dim=-1)
        return self.qkv(tokens)  # [B, T, 3 d_model]

    def forward(
        self, ids: torch.Tensor, days: torch.Tensor, embedding: ChannelEmbedding
    ) -> torch.Tensor:
        bsz, t, _ = days.shape
        qkv = self.qkv_fast(ids, embedding).view(bsz, t, 3, self.n_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, T, d_model / h] each
        heads = F.scaled_dot_product_attention(q, k, v)  # eq. 2, 4: [B, h, T, d_model / h]
        mh = self.out(heads.transpose(1, 2).reshape(bsz, t, self.d_model))  # eq. 3
        return days + mh  # [B, T, C * d_input]


class M2M(nn.Module):
    kind = "m2m"

    def __init__(self, spec: InputSpec, config: M2MConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        c, m = config, spec.n_tasks
        self.encoder = FeatureEncoder(spec, c.d_input)
        if c.use_transformer:
            enc, t = self.encoder, spec.seq_len
            self.attn_b = DaySelfAttention(enc.behaviour, t, c.d_input, c.n_heads)
            self.attn_p = DaySelfAttention(enc.performance, t, c.d_input, c.n_heads)
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

    def features(self, batch: dict[str, torch.Tensor], static: torch.Tensor) -> torch.Tensor:
        """F (eq. 5) flattened over days, with the dense S and A appended (4.1.3): [B, n_flat]."""
        xb, xp = self.encoder.sequences(batch)  # [B, T, NB * d_input], [B, T, NP * d_input]
        if self.config.use_transformer:  # else ablation "w/o TL": the baselines' flat input
            enc = self.encoder
            xb = self.attn_b(batch["behaviour"], xb, enc.behaviour)  # eq. 2-4: [B, T, NB * d_in]
            xp = self.attn_p(batch["performance"], xp, enc.performance)  # [B, T, NP * d_in]
        return torch.cat([xb.flatten(1), xp.flatten(1), static], dim=-1)  # eq. 5: [B, n_flat]

    def task_views(self) -> torch.Tensor:
        return act(self.task_mlp(self.task_ids.weight))  # eq. 7: T [M, d_view]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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
        return F.softplus(self.heads(tower).squeeze(-1))  # positive rate [B, M]
