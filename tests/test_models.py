"""ModelSpec, model construction, shapes, gradients, masking, initialisation and checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from salt.models import MODELS, ModelSpec, build_model, load_model, save_model
from salt.models.keras_init import keras_fans

torch.set_num_threads(1)
ALL = sorted(MODELS)


def spec(variant: str, **kw) -> ModelSpec:
    base = {"model": variant, "particles": 12, "classes": 3}
    base.update(kw)
    return ModelSpec.from_dict(base)


def jets(batch: int, n: int, features: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, features, generator=gen)
    counts = torch.randint(1, n + 1, (batch, 1), generator=gen)
    mask = torch.arange(n)[None] < counts
    return x * mask[..., None], mask


# ---------------------------------------------------------------------------- spec


def test_spec_defaults_and_round_trip():
    s = ModelSpec.from_dict({"model": "salt", "particles": 64, "features": 3, "classes": 5})
    d = s.to_dict()
    assert d == {"model": "salt", "particles": 64, "classes": 5, "features": 3, "d_model": 16, "d_ff": 16,
                 "heads": 4, "partitions": 4, "conv_heights": [1, 3, 5], "blocks": 1, "aggregation": "max",
                 "mask": False}
    assert json.loads(json.dumps(d)) == d
    assert ModelSpec.from_dict(d) == s
    assert ModelSpec.from_dict({"model": "salt", "particles": 64, "classes": 5, "blocks": 2}).conv_heights == (1, 3, 5, 7, 9)
    assert ModelSpec.from_dict({"model": "linformer", "particles": 64, "classes": 5}).conv_heights == ()


@pytest.mark.parametrize("bad, needle", [
    ({"model": "salt", "particles": 8, "classes": 2, "colour": 1}, "'colour'"),
    ({"model": "salsa", "particles": 8, "classes": 2}, "'salsa'"),
    ({"model": "salt", "classes": 2}, "'particles'"),
    ({"model": "salt", "particles": 0, "classes": 2}, "'particles'"),
    ({"model": "salt", "particles": 8, "classes": 2.5}, "'classes'"),
    ({"model": "salt", "particles": 8, "classes": 2, "d_model": 15}, "divisible"),
    ({"model": "salt", "particles": 8, "classes": 2, "aggregation": "median"}, "'aggregation'"),
    ({"model": "salt", "particles": 8, "classes": 2, "mask": "yes"}, "'mask'"),
    ({"model": "linformer", "particles": 8, "classes": 2, "conv_heights": [3]}, "no convolution"),
    ({"model": "salt", "particles": 8, "classes": 2, "conv_heights": []}, "must not be empty"),
    ({"model": "salt", "particles": 8, "classes": 2, "conv_heights": [0, 3]}, "'conv_heights'"),
])
def test_spec_rejects_bad_input(bad, needle):
    with pytest.raises(ValueError, match=needle):
        ModelSpec.from_dict(bad)


def test_spec_replace_reresolves_heights():
    s = spec("salt").replace(blocks=3)
    assert s.conv_heights == (1, 3, 5, 7, 9) and s.blocks == 3
    assert spec("salt").replace(model="linformer").conv_heights == ()


# ---------------------------------------------------------------------------- shapes and gradients


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("kw", [{}, {"mask": True}, {"classes": 1}, {"blocks": 2}, {"aggregation": "mean"},
                                {"aggregation": "sum", "mask": True, "particles": 13, "partitions": 3}])
def test_shapes_and_gradients(variant, kw):
    s = spec(variant, **kw)
    model = build_model(s)
    assert model.spec == s
    x, mask = jets(5, s.particles)
    x.requires_grad_(True)
    logits = model(x, mask)
    assert logits.shape == (5, s.classes) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # parameters that reach the loss get a gradient (the conv biases shift every logit of a row
    # alike and the softmax cancels them; partition slots beyond N only ever meet zeros)
    silent = {n for n, p in model.named_parameters() if p.grad.abs().max() == 0}
    assert all(n.endswith("conv.bias") or n.endswith(".E") or n.endswith(".F") for n in silent), silent

    probs = model.probabilities(x, mask)
    assert probs.shape == (5, s.classes)
    if s.classes == 1:
        assert torch.allclose(probs, torch.sigmoid(logits.detach()))
    else:
        assert torch.allclose(probs.sum(-1), torch.ones(5))

    maps = model.attention_maps(x, mask)
    assert len(maps) == s.blocks
    keys = s.particles if s.attention == "full" else s.partitions
    for w in maps:
        assert w.shape == (5, s.heads, s.particles, keys)
        assert torch.allclose(w.sum(-1), torch.ones(5, s.heads, s.particles), atol=1e-5)


@pytest.mark.parametrize("variant", ALL)
def test_fused_and_straightforward_agree_with_gradients(variant):
    s = spec(variant, particles=23, partitions=5, blocks=2, classes=4)
    torch.manual_seed(1)
    fused = build_model(s)
    plain = build_model(s, impl="straightforward")
    plain.load_state_dict(fused.state_dict())
    x, _ = jets(6, s.particles, seed=2)
    out_f, out_p = fused(x), plain(x)
    assert torch.allclose(out_f, out_p, atol=1e-5)
    out_f.square().sum().backward()
    out_p.square().sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-4), name
    with torch.no_grad():  # the in-place inference path and the sliced batch give the same numbers
        fused.inference_chunk_rows = 2 * s.particles
        assert torch.allclose(fused(x), out_p, atol=1e-5)


@pytest.mark.parametrize("variant", ["salt", "linformer"])
def test_inference_weight_cache_follows_parameter_updates(variant):
    """Weight-only products are reused between no-grad calls; any change of the parameters
    (an optimizer step, load_state_dict, a dtype change) must show in the next call."""
    torch.manual_seed(0)
    model = build_model(spec(variant))
    x, _ = jets(3, 12)
    with torch.no_grad():
        before = model(x)
    torch.optim.SGD(model.parameters(), lr=0.5).zero_grad()
    model(x).square().sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    reference = build_model(spec(variant), impl="straightforward")
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        after = model(x)
        assert not torch.allclose(before, after)
        assert torch.allclose(after, reference(x), atol=1e-5)
        other = build_model(spec(variant))
        model.load_state_dict(other.state_dict())
        assert torch.allclose(model(x), other(x), atol=1e-6)
        assert torch.allclose(model.double()(x.double()), other.double()(x.double()), atol=1e-10)


def test_mask_argument_ignored_unless_spec_mask():
    s = spec("salt")
    model = build_model(s)
    x, mask = jets(4, s.particles)
    assert torch.equal(model(x, mask), model(x))


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("aggregation", ["max", "mean", "sum"])
def test_masked_model_ignores_padded_slots(variant, aggregation):
    """With mask=True nothing a padded slot holds can change the output."""
    s = spec(variant, mask=True, particles=17, partitions=4, aggregation=aggregation, blocks=2)
    model = build_model(s)
    x, mask = jets(6, s.particles, seed=3)
    noisy = torch.where(mask[..., None], x, 50 * torch.randn_like(x))
    assert torch.allclose(model(x, mask), model(noisy, mask), atol=1e-5)
    empty = torch.zeros_like(mask)  # a jet with no particles at all stays finite
    assert torch.isfinite(model(noisy, empty)).all()


def test_unmasked_model_lets_padding_take_part():
    s = spec("salt")
    model = build_model(s)
    x, mask = jets(6, s.particles, seed=3)
    noisy = torch.where(mask[..., None], x, torch.randn_like(x))
    assert not torch.allclose(model(x), model(noisy))


def test_input_shape_errors_are_clear():
    model = build_model(spec("salt", mask=True))
    with pytest.raises(ValueError, match=r"expected \(batch, 12, 3\)"):
        model(torch.randn(2, 11, 3))
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(2, 12, 3), torch.ones(2, 12))


def test_impl_choice_is_checked():
    with pytest.raises(ValueError, match="impl"):
        build_model(spec("salt"), impl="fast")


# ---------------------------------------------------------------------------- initialisation


def test_keras_fan_rules():
    assert keras_fans((3, 16)) == (3, 16)
    assert keras_fans((4, 150, 4)) == (600, 16)  # dense E: fan_in = N·H, fan_out = p·H
    assert keras_fans((4, 4, 38)) == (16, 152)  # partitioned E
    assert keras_fans((5, 4, 1, 1)) == (20, 20)  # conv kernel


def test_keras_default_initialisation():
    torch.manual_seed(0)
    model = build_model(ModelSpec(model="salt", particles=150, classes=5))
    attn = model.blocks[0].attn

    def limit(fan_in, fan_out):
        return math.sqrt(6 / (fan_in + fan_out))

    checks = [(model.embed.weight, limit(3, 16)), (attn.q.weight, limit(16, 16)),
              (attn.E, limit(16, 152)), (attn.conv.kernels[2], limit(20, 20)), (model.out.weight, limit(16, 5))]
    for tensor, bound in checks:
        assert tensor.abs().max() <= bound
        assert tensor.abs().max() > 0.8 * bound  # uniform over the whole range, not a narrower default
        assert abs(tensor.float().var().item() - bound**2 / 3) < 0.35 * bound**2 / 3
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    assert model.blocks[0].dyt1.alpha.item() == 1.0 and model.blocks[0].dyt1.beta.item() == 0.0
    dense = build_model(ModelSpec(model="linformer", particles=150, classes=5)).blocks[0].attn.E
    assert dense.abs().max() <= limit(600, 16)


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("variant", ALL)
def test_checkpoint_round_trip(tmp_path, variant):
    s = spec(variant, mask=True, blocks=2, classes=1)
    model = build_model(s)
    path = tmp_path / "sub" / "model.pt"
    extra = {"epoch": 3, "history": [{"loss": 0.5}], "note": None, "best": torch.tensor([1.0, 2.0])}
    save_model(path, model, extra)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left behind
    payload = torch.load(path, weights_only=True)
    assert payload["spec"] == s.to_dict()
    loaded, extra2 = load_model(path, map_location="cpu")
    assert loaded.spec == s and not loaded.training
    assert extra2["epoch"] == 3 and torch.equal(extra2["best"], extra["best"])
    x, mask = jets(3, s.particles)
    with torch.no_grad():
        assert torch.equal(loaded(x, mask), model.eval()(x, mask))


def test_checkpoint_rejects_unloadable_extra_and_bad_files(tmp_path):
    model = build_model(spec("salt"))
    with pytest.raises(TypeError, match=r"extra\['cfg'\]"):
        save_model(tmp_path / "m.pt", model, {"cfg": object()})
    assert not (tmp_path / "m.pt").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format"):
        load_model(tmp_path / "other.pt")
    torch.save({"format": "salt-model/1", "spec": {"model": "salt", "particles": 12, "classes": 3, "extra": 1},
                "state_dict": {}}, tmp_path / "spec.pt")
    with pytest.raises(ValueError, match="'extra'"):
        load_model(tmp_path / "spec.pt")


@pytest.mark.parametrize("variant", ["salt", "transformer"])
def test_autocast_bf16(variant):
    """The training code may run steps under bf16 autocast; both the grad and no-grad paths must work."""
    model = build_model(spec(variant, mask=True))
    x, mask = jets(4, 12)
    ref = model(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask)
    out.float().sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out2 = model(x, mask)
    assert (out.float() - ref).abs().max() < 0.05 and (out2.float() - ref).abs().max() < 0.05
