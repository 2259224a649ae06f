"""The meta unit (paper eq. 9-13): both contraction orders against the literal formula."""

from __future__ import annotations

import pytest
import torch

from predictor.networks import build_model
from predictor.networks.embedding import act
from predictor.networks.meta import MetaLayer, MetaUnit
from predictor.networks.spec import InputSpec

D_IN, D_OUT, D_S = 6, 5, 4


def random_layer(*, groups: int, contraction: str, seed: int = 0) -> MetaLayer:
    torch.manual_seed(seed)
    layer = MetaLayer(D_IN, D_OUT, D_S, groups=groups, contraction=contraction).double()
    with torch.no_grad():  # away from the small initial scale, so every term matters
        for param in layer.parameters():
            param.normal_()
    return layer


def literal_eq_10_to_12(layer: MetaLayer, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W = Reshape(V_w S~ + v_w), b = V_b S~ + v_b, y = W^T h + b, sample by sample."""
    d_s = layer.d_scenario
    out = torch.empty(*h.shape[:3], layer.d_out, dtype=h.dtype)
    for n in range(h.shape[0]):
        for g in range(h.shape[1]):
            w = layer.w_base[g].clone()  # v_w: [d_in, d_out]
            for k in range(d_s):
                w = w + s[n, k] * layer.w_gen[k, g]  # eq. 11: + S~_k V_w[k]
            b = layer.b_gen[:, g].T @ s[n] + layer.b_base[g]  # eq. 12
            for r in range(h.shape[2]):
                out[n, g, r] = w.T @ h[n, g, r] + b  # eq. 10 before sigma
    return out


CASES = [
    (contraction, groups, rows)
    for contraction in ("outer", "generate", "auto")
    for groups in (1, 3)
    for rows in (1, 4)
]


@pytest.mark.parametrize(("contraction", "groups", "rows"), CASES)
def test_it_matches_the_literal_formula_of_eq_10_to_12(contraction: str, groups: int, rows: int):
    layer = random_layer(groups=groups, contraction=contraction)
    h = torch.randn(7, groups, rows, D_IN, dtype=torch.float64)
    s = torch.randn(7, D_S, dtype=torch.float64)
    expected = literal_eq_10_to_12(layer, h, s)
    torch.testing.assert_close(layer(h, s), expected)
    torch.testing.assert_close(layer.literal_forward(h, s), expected)


@pytest.mark.parametrize("contraction", ["outer", "generate"])
def test_it_has_the_gradients_of_the_literal_formula(contraction: str):
    layer = random_layer(groups=2, contraction=contraction)
    h = torch.randn(5, 2, 3, D_IN, dtype=torch.float64, requires_grad=True)
    s = torch.randn(5, D_S, dtype=torch.float64, requires_grad=True)
    inputs = [h, s, *layer.parameters()]
    fast = torch.autograd.grad(layer(h, s).sin().sum(), inputs)
    slow = torch.autograd.grad(literal_eq_10_to_12(layer, h, s).sin().sum(), inputs)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b)


def test_it_stacks_k_layers_with_the_activation_after_each():
    torch.manual_seed(0)
    unit = MetaUnit(D_IN, D_S, 3, contraction="outer").double()
    h = torch.randn(4, 2, D_IN, dtype=torch.float64)
    s = torch.randn(4, D_S, dtype=torch.float64)
    x = h.unsqueeze(1)
    for layer in unit.layers:
        x = act(literal_eq_10_to_12(layer, x, s))  # eq. 10
    torch.testing.assert_close(unit(h, s), x.squeeze(1))
    torch.testing.assert_close(unit.literal_forward(h, s), x.squeeze(1))


def test_it_contracts_over_the_scenario_vector_when_each_sample_has_one_row():
    layer = MetaLayer(64, 64, 64)
    assert layer.order_for(1) == "outer"
    # Once rows share a sample, forming each sample's W once is cheaper than R outer products.
    assert layer.order_for(5) == "generate"
    assert MetaLayer(64, 64, 64, contraction="outer").order_for(20) == "outer"


def per_sample_weights_kept(contraction: str) -> list[torch.Size]:
    """Shapes of the tensors autograd keeps that look like a [B, ..., d_in, d_out] weight."""
    batch = 8
    layer = MetaLayer(D_IN, D_OUT, D_S, contraction=contraction)
    h = torch.randn(batch, 1, 1, D_IN, requires_grad=True)
    s = torch.randn(batch, D_S, requires_grad=True)
    saved: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(h, s).sum().backward()
    return [shape for shape in saved if shape[0] == batch and shape.numel() >= batch * D_IN * D_OUT]


def test_it_never_forms_a_per_sample_weight_tensor_in_the_outer_order():
    assert per_sample_weights_kept("outer") == [torch.Size([8, (D_S + 1) * D_IN])]  # z only
    assert torch.Size([8, D_IN, D_OUT]) in per_sample_weights_kept("generate")  # the check bites


def test_it_generates_different_weights_for_different_scenarios():
    spec = InputSpec(
        seq_len=4,
        behaviour_bins=(3,),
        performance_bins=(3, 3),
        n_scenario=3,
        profile_cardinalities=(2,),
        n_profile_num=1,
        tasks=("clicks", "expenditure"),
    )
    torch.manual_seed(0)
    model = build_model("m2m", spec, d_view=8, d_meta=8, d_task_embedding=4, n_experts=2)
    one_advertiser = {
        "behaviour": torch.zeros(2, 4, 1, dtype=torch.int64),
        "performance": torch.ones(2, 4, 2, dtype=torch.int64),
        "profile_cat": torch.zeros(2, 1, dtype=torch.int64),
        "profile_num": torch.zeros(2, 1),
        "scenario": torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, -1.2]]),  # two scenarios
    }
    with torch.no_grad():
        s_tilde = act(model.scenario_mlp(model.encoder.static(one_advertiser)))  # eq. 8
        w, b = model.tower_units[0].layers[0].generate(s_tilde)  # eq. 11-12
        rates = model(one_advertiser)
    assert not torch.allclose(w[0], w[1])
    assert not torch.allclose(b[0], b[1])
    assert not torch.allclose(rates[0], rates[1])
