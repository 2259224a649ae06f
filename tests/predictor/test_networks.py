"""The networks: every model's output contract, checkpoints, the loss of eq. 19-20, the spec."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from predictor.networks import (
    MODEL_KINDS,
    InputSpec,
    build_model,
    l2_penalties,
    meta_parameter_names,
    model_checkpoint_dict,
    model_from_checkpoint_dict,
    poisson_loss,
)
from predictor.networks.embedding import dot_product_attention
from predictor.networks.m2m import DaySelfAttention

SPEC = InputSpec(
    seq_len=5,
    behaviour_bins=(4, 3),
    performance_bins=(5, 5, 6),
    n_scenario=4,
    profile_cardinalities=(3, 7),
    n_profile_num=2,
    tasks=("clicks", "expenditure", "active_days"),
)

# Small widths keep the suite fast; the defaults are exercised by the rebuild test.
SMALL = {
    "m2m": {"d_view": 16, "d_meta": 8, "d_task_embedding": 4, "n_experts": 3},
    "single_task": {"hidden": (16, 8)},
    "shared_bottom": {"bottom": (16,), "tower": (8,)},
    "cross_stitch": {"hidden": (16, 8)},
    "mmoe": {"n_experts": 3, "d_view": 16, "tower": (8,)},
    "mran": {"d_model": 8},
    "cgc": {"d_view": 16, "tower": (8,)},
}

VARIANTS = [(kind, SMALL[kind]) for kind in MODEL_KINDS] + [
    ("m2m", {**SMALL["m2m"], "use_transformer": False}),
    ("m2m", {**SMALL["m2m"], "use_meta_attention": False}),
    ("m2m", {**SMALL["m2m"], "use_meta_tower": False}),
    ("m2m", {**SMALL["m2m"], "meta_attention_per_task": True}),
    ("m2m", {**SMALL["m2m"], "meta_contraction": "outer"}),
]
VARIANT_IDS = [
    kind + "".join(f"-{k}={v}" for k, v in hp.items() if k not in SMALL[kind])
    for kind, hp in VARIANTS
]


def make_batch(spec: InputSpec, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def ids(bins: tuple[int, ...], *lead: int) -> torch.Tensor:
        cols = [torch.randint(0, b, (*lead, 1), generator=g) for b in bins]
        return torch.cat(cols, dim=-1)

    return {
        "behaviour": ids(spec.behaviour_bins, batch_size, spec.seq_len),
        "performance": ids(spec.performance_bins, batch_size, spec.seq_len),
        "scenario": torch.randn(batch_size, spec.n_scenario, generator=g),
        "profile_cat": ids(spec.profile_cardinalities, batch_size),
        "profile_num": torch.randn(batch_size, spec.n_profile_num, generator=g),
        "target": torch.poisson(torch.full((batch_size, spec.n_tasks), 2.0), generator=g),
    }


@pytest.mark.parametrize(("kind", "hparams"), VARIANTS, ids=VARIANT_IDS)
def test_it_returns_finite_positive_rates_of_shape_batch_by_tasks(kind: str, hparams: dict):
    torch.manual_seed(0)
    model = build_model(kind, SPEC, **hparams)
    rate = model(make_batch(SPEC, 7))
    assert rate.shape == (7, SPEC.n_tasks)
    assert torch.isfinite(rate).all()
    assert (rate > 0).all()


@pytest.mark.parametrize(("kind", "hparams"), VARIANTS, ids=VARIANT_IDS)
def test_it_sends_a_finite_gradient_to_every_parameter(kind: str, hparams: dict):
    torch.manual_seed(0)
    model = build_model(kind, SPEC, **hparams)
    batch = make_batch(SPEC, 6)
    out = model.outputs(batch)
    (poisson_loss(out.rate, batch["target"]) + model.loss_terms(out, batch["target"])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize(("kind", "hparams"), VARIANTS, ids=VARIANT_IDS)
def test_it_trains_the_distribution_heads_without_touching_the_papers_weights(
    kind: str, hparams: dict
):
    torch.manual_seed(0)
    model = build_model(kind, SPEC, **hparams)
    batch = make_batch(SPEC, 6)
    model.loss_terms(model.outputs(batch), batch["target"]).backward()
    for name, param in model.named_parameters():
        if name.startswith("distribution."):
            assert param.grad is not None and bool(param.grad.abs().sum() > 0), name
        else:
            assert param.grad is None or not bool(param.grad.any()), name


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_it_lowers_the_loss_on_a_tiny_fixed_batch(kind: str):
    torch.manual_seed(0)
    model = build_model(kind, SPEC, **SMALL[kind])
    batch = make_batch(SPEC, 16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.998), eps=1e-9)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = poisson_loss(model(batch), batch["target"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_it_rebuilds_the_same_model_from_a_json_round_tripped_checkpoint(kind: str):
    torch.manual_seed(0)
    model = build_model(kind, SPEC).eval()  # default sizes
    data = model_checkpoint_dict(model)
    plain = json.loads(
        json.dumps({"kind": data["kind"], "spec": data["spec"], "config": data["config"]})
    )
    rebuilt = model_from_checkpoint_dict({**plain, "state_dict": data["state_dict"]})
    batch = make_batch(SPEC, 4)
    assert rebuilt.config == model.config
    assert rebuilt.spec == SPEC
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), model(batch))


def test_it_rebuilds_from_the_config_as_hyperparameters():
    model = build_model("m2m", SPEC, tower_layers=1, use_meta_attention=False)
    again = build_model("m2m", SPEC, **dataclasses.asdict(model.config))
    assert again.config == model.config
    assert [n for n, _ in again.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_it_lists_the_seven_model_kinds():
    assert MODEL_KINDS == (
        "m2m",
        "single_task",
        "shared_bottom",
        "cross_stitch",
        "mmoe",
        "mran",
        "cgc",
    )


def test_it_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind 'xgboost'"):
        build_model("xgboost", SPEC)


def test_it_rejects_an_unknown_hyperparameter_and_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['n_layers'\].*d_meta"):
        build_model("m2m", SPEC, n_layers=3)


def test_it_attends_over_days_with_positions_so_day_order_matters():
    torch.manual_seed(0)
    attention = DaySelfAttention(d_day=6, seq_len=4, d_pos=2, n_heads=2).double()
    days = torch.randn(3, 4, 6, dtype=torch.float64)
    out = attention(days)
    assert out.shape == days.shape
    tokens = torch.cat([days, attention.positions.expand(3, -1, -1)], dim=-1)  # 4.1.1
    q, k, v = attention.qkv(tokens).chunk(3, dim=-1)
    heads = [
        torch.softmax(qh @ kh.transpose(1, 2) / qh.shape[-1] ** 0.5, dim=-1) @ vh  # eq. 2
        for qh, kh, vh in zip(q.chunk(2, -1), k.chunk(2, -1), v.chunk(2, -1), strict=True)
    ]
    torch.testing.assert_close(out, days + attention.out(torch.cat(heads, dim=-1)))  # eq. 3
    reversed_out = attention(days.flip(1)).flip(1)
    assert not torch.allclose(out, reversed_out)  # positions make the order count


def test_it_computes_attention_as_torch_does_for_any_leading_shape_and_key_count():
    torch.manual_seed(0)
    q = torch.randn(3, 2, 4, 8, dtype=torch.float64, requires_grad=True)  # [B, h, N, d]
    k = torch.randn(3, 2, 6, 8, dtype=torch.float64, requires_grad=True)  # N' = 6 keys
    v = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    ours = dot_product_attention(q, k, v)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, reference)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_it_feeds_the_baselines_the_day_projected_sequences():
    torch.manual_seed(0)
    model = build_model("mmoe", SPEC, **SMALL["mmoe"]).double()
    batch = make_batch(SPEC, 4)
    enc = model.encoder
    xb, xp = enc.sequences(batch)
    literal = torch.cat(
        [enc.day_b(xb).flatten(1), enc.day_p(xp).flatten(1), enc.static(batch)], dim=-1
    )
    torch.testing.assert_close(enc.flat(batch), literal)
    assert literal.shape[1] == enc.n_flat == SPEC.seq_len * 2 * model.config.d_day + enc.n_static


def test_it_rejects_a_token_width_the_heads_do_not_divide():
    with pytest.raises(ValueError, match="not divisible by 4 heads"):
        build_model("m2m", SPEC, d_day=5, d_input=5, n_heads=4)  # token 5 + 5 = 10 wide
    assert isinstance(
        build_model("m2m", SPEC, d_day=5, d_input=5, n_heads=2).attn_b, DaySelfAttention
    )


def test_it_uses_the_flat_embedding_without_the_transformer():
    model = build_model("m2m", SPEC, use_transformer=False)
    assert not any(name.startswith("attn_b") for name, _ in model.named_parameters())
    assert model.experts.first.in_features == model.encoder.n_flat


def test_it_counts_meta_unit_parameters_apart_from_the_others():
    m2m = build_model("m2m", SPEC, **SMALL["m2m"])
    names = meta_parameter_names(m2m)
    assert names
    assert all(n.startswith(("attn_unit.", "tower_units.")) for n in names)
    meta, other = l2_penalties(m2m)
    expected_meta = sum(p.square().sum() for n, p in m2m.named_parameters() if n in names)
    torch.testing.assert_close(meta, expected_meta)
    assert other > 0


def test_it_has_no_meta_parameters_in_baselines_or_with_both_meta_modules_off():
    ablated = build_model(
        "m2m", SPEC, **SMALL["m2m"], use_meta_attention=False, use_meta_tower=False
    )
    for model in (build_model("mmoe", SPEC, **SMALL["mmoe"]), ablated):
        assert meta_parameter_names(model) == set()
        assert l2_penalties(model)[0].item() == 0.0


def test_it_leaves_biases_out_of_the_l2_penalty():
    model = build_model("shared_bottom", SPEC, **SMALL["shared_bottom"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(0.0 if not name.endswith("bias") else 5.0)
    assert l2_penalties(model)[1].item() == 0.0


def test_it_computes_the_poisson_loss_of_eq_20_by_hand():
    rate = torch.tensor([[1.0, 2.0], [0.5, 4.0]])
    target = torch.tensor([[0.0, 3.0], [1.0, 2.0]])
    log = torch.log
    per_task = torch.stack(
        [
            ((1.0 - 0.0 * log(torch.tensor(1.0))) + (0.5 - 1.0 * log(torch.tensor(0.5)))) / 2,
            ((2.0 - 3.0 * log(torch.tensor(2.0))) + (4.0 - 2.0 * log(torch.tensor(4.0)))) / 2,
        ]
    )
    torch.testing.assert_close(poisson_loss(rate, target), per_task.sum())
    torch.testing.assert_close(
        poisson_loss(rate, target, task_weights=[2.0, 0.5]), 2.0 * per_task[0] + 0.5 * per_task[1]
    )


def test_it_keeps_the_poisson_loss_finite_for_a_rate_that_underflows_to_zero():
    loss = poisson_loss(torch.tensor([[0.0]]), torch.tensor([[3.0]]))
    assert torch.isfinite(loss)


def test_it_rejects_task_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match="3 entries for 2 tasks"):
        poisson_loss(torch.ones(2, 2), torch.ones(2, 2), task_weights=[1.0, 1.0, 1.0])


def test_it_trains_the_single_task_nets_independently():
    torch.manual_seed(0)
    model = build_model("single_task", SPEC, **SMALL["single_task"])
    batch = make_batch(SPEC, 4)
    rate = model(batch)
    poisson_loss(rate[:, :1], batch["target"][:, :1]).backward()  # task 0 only
    assert all(p.grad is not None for p in model.nets[0].parameters())
    others = [p.grad for net in model.nets[1:] for p in net.parameters()]
    assert all(g is None or not g.any() for g in others)


def test_it_restores_an_input_spec_from_json_lists():
    again = InputSpec.from_dict(json.loads(json.dumps(SPEC.to_dict())))
    assert again == SPEC
    assert isinstance(again.behaviour_bins, tuple)


def test_it_accepts_a_batch_that_keeps_the_contract():
    SPEC.check_batch(make_batch(SPEC, 3), with_target=True)


def test_it_names_the_key_and_channel_of_an_out_of_range_bin_id():
    batch = make_batch(SPEC, 3)
    batch["performance"][0, 0, 2] = 6  # channel 2 has 6 bins: ids 0..5
    with pytest.raises(ValueError, match=r'batch\["performance"\] channel 2 .*\[0, 6\)'):
        SPEC.check_batch(batch)


def test_it_names_the_key_whose_shape_breaks_the_contract():
    batch = make_batch(SPEC, 3)
    batch["scenario"] = batch["scenario"][:, :3]
    with pytest.raises(
        ValueError, match=r'batch\["scenario"\] is torch.float32 \[3, 3\], expected'
    ):
        SPEC.check_batch(batch)


def test_it_rejects_a_spec_without_channels():
    with pytest.raises(ValueError, match="behaviour_bins is empty"):
        dataclasses.replace(SPEC, behaviour_bins=())


def test_it_rejects_a_non_positive_width_naming_the_field():
    with pytest.raises(ValueError, match=r"MMoEConfig.tower\[1\] must be a positive integer"):
        build_model("mmoe", SPEC, tower=(8, 0))


def test_it_allows_a_meta_tower_of_zero_layers():
    model = build_model("m2m", SPEC, **SMALL["m2m"], tower_layers=0)
    assert model(make_batch(SPEC, 2)).shape == (2, SPEC.n_tasks)
