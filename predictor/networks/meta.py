"""The meta unit of M2M (paper 4.2.1, eq. 9-13): layers whose weights are generated per sample.

A meta layer turns the scenario knowledge S~ (eq. 8, width d_s) into a weight matrix and a bias,

    W = Reshape(V_w S~ + v_w)      (eq. 11)      W: [d_in, d_out]
    b = Reshape(V_b S~ + v_b)      (eq. 12)      b: [d_out]
    h' = sigma(W^T h + b)          (eq. 10)

and a meta unit stacks K of them (eq. 9, 13). S~ depends on the advertiser's profile, so W is
different for every sample. Written out, one output is a trilinear contraction

    y[b, r, o] = sum_{s, i} S~[b, s] h[b, r, i] V_w[s, i, o] + sum_i h[b, r, i] v_w[i, o] + b[b, o]

where r runs over the rows that share one sample's S~ (M2M feeds k experts x M tasks to the
attention unit, M tasks to a tower unit). There are two sensible orders for the first term:

- "outer": z = S~ (x) h per row, [R, d_s * d_in], then ONE GEMM with V_w reshaped to
  [d_s * d_in, d_out]. Never forms a per-sample weight tensor. Costs R * d_s * d_in * d_out
  multiply-adds and stores z (R * d_s * d_in floats) for the backward pass.
- "generate": W = S~ V_w, [B, d_in, d_out] (one GEMM), then one batched matmul h W. Costs
  B * d_s * d_in * d_out + R * d_in * d_out and stores W (B * d_in * d_out floats).

With d_s = d_out (the paper's d for both) the two cost the same when each sample has one row,
and "outer" saves memory whenever d_s < d_out; once rows share a sample (R = n * B), "outer"
does n times the work and holds n times the activations. "auto" picks the order that stores
less (outer iff rows_per_sample * d_s <= d_out), so a per-sample weight tensor is formed only
where the contraction over S~ would cost more memory and more arithmetic. In M2M at the default
sizes (B=256, d=64, 20 rows per sample in meta attention, 5 in the tower) "auto" picks
"generate" everywhere; forcing "outer" made a CPU training step about 3.7 times slower.
`literal_forward` is eq. 10-12 evaluated sample by sample, the reference for the tests.

Wide inputs are projected to d by the caller before they reach a meta unit (the generator of
a d_in x d_out layer has d_s * d_in * d_out parameters).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from predictor.networks.embedding import act

CONTRACTIONS = ("auto", "outer", "generate")


class MetaLayer(nn.Module):
    """One generated layer (eq. 10-12), `groups` independent generators side by side.

    forward(h [B, G, R, d_in], s [B, d_s]) -> pre-activation [B, G, R, d_out].

    Parameters, named after the paper's terms:
        w_gen [d_s, G, d_in, d_out] = V_w of eq. 11     w_base [G, d_in, d_out] = v_w
        b_gen [d_s, G, d_out]       = V_b of eq. 12     b_base [G, d_out]       = v_b
    The generators (V_w, V_b) are kept apart from the base weights (v_w, v_b) so that the
    trainer can give them their own learning rate (`generator_parameters`).
    """

    def __init__(
        self, d_in: int, d_out: int, d_scenario: int, *, groups: int = 1, contraction: str = "auto"
    ) -> None:
        super().__init__()
        if contraction not in CONTRACTIONS:
            raise ValueError(f"contraction must be one of {CONTRACTIONS}, got {contraction!r}.")
        self.d_in, self.d_out, self.d_scenario, self.groups = d_in, d_out, d_scenario, groups
        self.contraction = contraction
        ds = d_scenario
        # The generated W gets variance ~1/d_in from v_w and about as much again from V_w S~
        # (S~ entries are O(1)): the scale of a default-initialised linear layer.
        self.w_gen = nn.Parameter(torch.randn(ds, groups, d_in, d_out) / math.sqrt(ds * d_in))
        self.w_base = nn.Parameter(torch.randn(groups, d_in, d_out) / math.sqrt(d_in))
        self.b_gen = nn.Parameter(torch.randn(ds, groups, d_out) * (0.1 / math.sqrt(ds)))
        self.b_base = nn.Parameter(torch.zeros(groups, d_out))

    def order_for(self, rows_per_sample: int) -> str:
        if self.contraction != "auto":
            return self.contraction
        return "outer" if rows_per_sample * self.d_scenario <= self.d_out else "generate"

    def generate(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's generated W [B, G, d_in, d_out] and b [B, G, d_out] (eq. 11-12)."""
        # (S~ V) += v in place: 10% faster on a CPU than addmm, whose bias broadcast costs a copy
        w = (s @ self.w_gen.flatten(1)).add_(self.w_base.flatten())  # eq. 11: V_w S~ + v_w
        b = (s @ self.b_gen.flatten(1)).add_(self.b_base.flatten())  # eq. 12: V_b S~ + v_b
        return w.view(-1, self.groups, self.d_in, self.d_out), b.view(-1, self.groups, self.d_out)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        bsz, g, rows, d_in = h.shape
        if self.order_for(rows) == "generate":
            w, b = self.generate(s)  # eq. 11-12: [B, G, d_in, d_out], [B, G, d_out]
            if g == 1:  # one batched matmul with the bias fused in
                y = torch.baddbmm(b, h.view(bsz, rows, d_in), w.view(bsz, d_in, self.d_out))
                return y.view(bsz, 1, rows, self.d_out)  # eq. 10 (pre-sigma): [B, 1, R, d_out]
            return torch.matmul(h, w) + b.unsqueeze(2)  # eq. 10 (pre-sigma): [B, G, R, d_out]
        # outer order: z[b, g, r, (s, i)] = s1[b, s] h[b, g, r, i] with s1 = [S~ || 1], then one
        # GEMM per group against [V_w; v_w]: the constant's block applies v_w.
        b = (s @ self.b_gen.flatten(1)).add_(self.b_base.flatten())  # eq. 12: [B, G * d_out]
        b = b.view(bsz, g, 1, self.d_out)  # [B, G, 1, d_out]
        s1 = with_one(s)  # [B, d_s + 1]
        z = (s1[:, None, None, :, None] * h.unsqueeze(3)).flatten(3)  # [B, G, R, (d_s + 1) d_in]
        gen = torch.cat([self.w_gen, self.w_base.unsqueeze(0)])  # [d_s + 1, G, d_in, d_out]
        if g == 1:  # a 2-D right operand lets matmul fold B and R into one GEMM
            return torch.matmul(z, gen[:, 0].flatten(0, 1)) + b  # eq. 10-11 (pre-sigma)
        gen = gen.transpose(0, 1).flatten(1, 2)  # [G, (d_s + 1) d_in, d_out]
        return torch.einsum("bgrk,gko->bgro", z, gen) + b  # eq. 10-11: [B, G, R, d_out]

    def literal_forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Eq. 10-12 sample by sample and group by group, for tests."""
        ds = self.d_scenario
        bsz, g, rows, _ = h.shape
        out = h.new_empty(bsz, g, rows, self.d_out)
        for n in range(bsz):
            for k in range(g):
                v_w = self.w_gen[:, k].reshape(ds, -1)  # V_w: [d_s, d_in * d_out]
                w = (v_w.T @ s[n]).reshape(self.d_in, self.d_out) + self.w_base[k]  # eq. 11
                b = self.b_gen[:, k].T @ s[n] + self.b_base[k]  # eq. 12
                out[n, k] = h[n, k] @ w + b  # eq. 10 (pre-sigma)
        return out


class MetaUnit(nn.Module):
    """K meta layers of width d: h_out = Meta(h_in) (eq. 9-13).

    forward(h, s): h is [B, *rows, d] with one generator (groups=1) or [B, G, *rows, d] with
    G generators (one per task, say); s is S~ [B, d_s]. Returns h^(K) in h's shape.
    """

    def __init__(
        self, d: int, d_scenario: int, n_layers: int, *, groups: int = 1, contraction: str = "auto"
    ) -> None:
        super().__init__()
        self.groups = groups
        self.layers = nn.ModuleList(
            MetaLayer(d, d, d_scenario, groups=groups, contraction=contraction)
            for _ in range(n_layers)
        )

    def _grouped(self, h: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return h.reshape(h.shape[0], 1, -1, h.shape[-1])  # [B, 1, R, d]
        return h.reshape(h.shape[0], self.groups, -1, h.shape[-1])  # [B, G, R, d]

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self._grouped(h)  # eq. 9: h^(0) = h_input, [B, G, R, d]
        for layer in self.layers:
            x = act(layer(x, s))  # eq. 10: h^(i) = sigma(W^(i-1) h^(i-1) + b^(i-1))
        return x.reshape(h.shape)  # eq. 13: h_output = h^(K)

    def literal_forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self._grouped(h)
        for layer in self.layers:
            x = act(layer.literal_forward(x, s))
        return x.reshape(h.shape)


class StaticUnit(nn.Module):
    """The ablation stand-in for a meta unit: the same K layers with ordinary learned weights."""

    def __init__(self, d: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(n_layers))

    def forward(self, h: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            h = act(layer(h))
        return h


def with_one(x: torch.Tensor) -> torch.Tensor:
    """x with a constant 1 appended to its last axis, so a bias rides along in a matmul."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


def generator_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """(parameter, d_s) for the generators V_w and V_b of every meta layer in `model`."""
    return [
        (param, layer.d_scenario)
        for layer in model.modules()
        if isinstance(layer, MetaLayer)
        for param in (layer.w_gen, layer.b_gen)
    ]
