"""ParT's pairwise features and the pair-bias variants (part, salt_pair)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from salt.models import ModelSpec, build_model
from salt.models.cost import model_cost, pair_bias_ops
from salt.models.pairwise import DELTA_R_RESOLUTION, M2_RESOLUTION

EPS = 1e-8


def physical_jets(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pt, deta, dphi) in GeV and radians, zero padded, with some Δφ near ±π to exercise the wrap."""
    rng = np.random.default_rng(seed)
    pt = rng.uniform(0.5, 400.0, (batch, n))
    deta = rng.uniform(-0.8, 0.8, (batch, n))
    dphi = rng.uniform(-0.8, 0.8, (batch, n))
    dphi[:, 0], dphi[:, 1] = 3.1, -3.1
    counts = rng.integers(1, n + 1, batch)
    counts[0] = n
    mask = np.arange(n)[None] < counts[:, None]
    x = np.stack([pt, deta, dphi], -1) * mask[..., None]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(mask)


def lab_vector(pt: float, deta: float, dphi: float, eta_jet: float, phi_jet: float) -> np.ndarray:
    """The massless constituent's four-vector in the lab, given the jet axis (float64)."""
    eta, phi = eta_jet + deta, phi_jet + dphi
    return pt * np.array([math.cos(phi), math.sin(phi), math.sinh(eta), math.cosh(eta)])


def assert_features_close(got: np.ndarray, a: np.ndarray, b: np.ndarray, energies: tuple[float, float],
                          where: str) -> None:
    """got (4,) against the definitions, with the resolution floors of ΔR and of m² (jet-frame
    energies); m² is compared linearly, to float32 rounding of the Minkowski product."""
    def pt_y_phi(p):
        return math.hypot(p[0], p[1]), 0.5 * math.log((p[3] + p[2]) / (p[3] - p[2])), math.atan2(p[1], p[0])

    (pt_a, y_a, phi_a), (pt_b, y_b, phi_b) = pt_y_phi(a), pt_y_phi(b)
    dphi = (phi_a - phi_b + math.pi) % (2 * math.pi) - math.pi
    delta = max(math.sqrt((y_a - y_b) ** 2 + dphi ** 2), DELTA_R_RESOLUTION)
    s = a + b
    m2 = max(s[3] ** 2 - s[0] ** 2 - s[1] ** 2 - s[2] ** 2, M2_RESOLUTION * energies[0] * energies[1], EPS)
    ptmin = min(pt_a, pt_b)
    want = np.log(np.maximum([ptmin * delta, ptmin / (pt_a + pt_b), delta], EPS))
    np.testing.assert_allclose(got[:3], want, rtol=1e-4, atol=2e-4, err_msg=where)
    assert abs(math.exp(got[3]) - m2) <= 1e-4 * m2 + 1e-6 * (a[3] + b[3]) ** 2, where


def jet_frame_energy(x: torch.Tensor) -> float:
    return float(x[0]) * math.cosh(float(x[1]))


def pair_model(variant: str, n: int, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec.from_dict({"model": variant, "particles": n, "classes": 5, **kw}))


def randomise_bias(model: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.pair.embed.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def test_particle_pair_features_match_direct_computation():
    n = 9
    x, mask = physical_jets(3, n)
    got = pair_model("part", n).pair.features(x, mask).permute(1, 3, 2, 0).double().numpy()
    eta_jet, phi_jet = 1.3, -2.9  # any jet axis: the features are boost and rotation invariant
    for j in range(len(x)):
        vec = [lab_vector(*map(float, x[j, i]), eta_jet, phi_jet) for i in range(n)]
        energy = [jet_frame_energy(x[j, i]) for i in range(n)]
        for a in range(n):
            for b in range(n):
                if a != b and mask[j, a] and mask[j, b]:
                    assert_features_close(got[j, a, b], vec[a], vec[b], (energy[a], energy[b]), f"jet {j}, pair ({a}, {b})")


@pytest.mark.parametrize("n, p", [(10, 4), (12, 3), (7, 8)])
def test_partition_pair_features_match_direct_computation(n, p):
    x, mask = physical_jets(4, n, seed=n)
    got = pair_model("salt_pair", n, partitions=p).pair.features(x, mask).permute(1, 3, 2, 0).double().numpy()
    assert got.shape == (4, n, p, 4)
    chunk = math.ceil(n / p)
    eta_jet, phi_jet = -0.7, 0.4
    for j in range(len(x)):
        vec = [lab_vector(*map(float, x[j, i]), eta_jet, phi_jet) for i in range(n)]
        for k in range(p):
            members = [i for i in range(k * chunk, min((k + 1) * chunk, n)) if mask[j, i]]
            total = sum((vec[i] for i in members), np.zeros(4))
            total_energy = sum(jet_frame_energy(x[j, i]) for i in members)
            for a in range(n):
                if not mask[j, a]:
                    continue
                if members:
                    assert_features_close(got[j, a, k], vec[a], total, (jet_frame_energy(x[j, a]), total_energy),
                                          f"jet {j}, particle {a}, partition {k}")
                else:  # an empty partition: no pT; ΔR is to the jet axis; m² is the particle's own, 0
                    np.testing.assert_allclose(got[j, a, k, [0, 1, 3]], math.log(EPS), rtol=1e-6)


def test_calibration_reads_physical_values_back_from_normalised_inputs():
    n = 8
    x, mask = physical_jets(5, n, seed=3)
    plain = pair_model("part", n).pair.features(x, mask)
    # the loader's layout: other features beside, normalised with (center, scale), padding zero
    features = ["energy", "dphi", "pt", "deta"]
    center = np.array([50.0, 0.01, 20.0, -0.02])
    scale = np.array([100.0, 0.5, 80.0, 0.4])
    physical = torch.cat([x[..., :1] * 2, x[..., 2:3], x[..., 0:1], x[..., 1:2]], -1)
    normalised = ((physical - torch.tensor(center, dtype=torch.float32)) / torch.tensor(scale, dtype=torch.float32))
    normalised = normalised * mask[..., None]
    model = pair_model("part", n, features=4)
    model.pair.calibrate(features, {"center": center.tolist(), "scale": scale.tolist()})
    got = model.pair.features(normalised, mask)
    real = (mask[:, :, None] & mask[:, None, :])[None].expand_as(got)
    assert torch.allclose(got[real], plain[real], atol=1e-3)
    with pytest.raises(ValueError, match=r"missing \['deta'\]"):
        model.pair.calibrate(["pt", "dphi", "eta", "energy"], {"center": [0] * 4, "scale": [1] * 4})
    with pytest.raises(ValueError, match="'scale' has 3 values"):
        model.pair.calibrate(features, {"center": [0] * 4, "scale": [1] * 3})


@pytest.mark.parametrize("pair, plain, impl", [("part", "transformer", "fused"), ("salt_pair", "salt", "fused"),
                                               ("salt_pair", "salt", "straightforward")])
@pytest.mark.parametrize("kw", [{}, {"mask": True, "blocks": 2}, {"pair_hidden": 8}])
def test_pair_variants_equal_plain_ones_when_bias_weights_are_zero(pair, plain, impl, kw):
    n = 11
    x, mask = physical_jets(6, n, seed=4)
    spec = ModelSpec.from_dict({"model": pair, "particles": n, "classes": 5, "partitions": 3, **kw})
    torch.manual_seed(5)
    with_bias = build_model(spec, impl=impl)
    torch.manual_seed(5)
    without = build_model(spec.replace(model=plain, pair_hidden=0), impl=impl)
    with torch.no_grad():
        # the last layer starts at zero: a fresh pair model is its plain variant
        assert torch.allclose(with_bias(x, mask), without(x, mask), rtol=0, atol=1e-6)
        randomise_bias(with_bias)
        assert not torch.allclose(with_bias(x, mask), without(x, mask), atol=1e-3)
        for p in with_bias.pair.embed[-1].parameters():
            p.zero_()
        assert torch.allclose(with_bias(x, mask), without(x, mask), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["part", "salt_pair"])
def test_fused_and_straightforward_agree_with_a_bias(variant):
    n = 13
    x, mask = physical_jets(5, n, seed=6)
    model = pair_model(variant, n, mask=True, blocks=2)
    randomise_bias(model)
    maps = model.attention_maps(x, mask)
    assert torch.allclose(maps[0].sum(-1), torch.ones(()), atol=1e-5)
    if variant == "salt_pair":
        fused = model(x, mask)
        assert torch.allclose(model.set_impl("straightforward")(x, mask), fused, atol=1e-5)


@pytest.mark.parametrize("variant", ["part", "salt_pair"])
@pytest.mark.parametrize("pair_hidden", [0, 6])
def test_gradients_flow_to_every_parameter(variant, pair_hidden):
    n = 10
    x, mask = physical_jets(8, n, seed=7)
    mask[-1] = False  # an empty jet stays finite too
    x[-1] = 0
    model = pair_model(variant, n, pair_hidden=pair_hidden, mask=True)
    randomise_bias(model)
    x.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x, mask), torch.arange(8) % 5)
    loss.backward()
    assert torch.isfinite(x.grad).all()  # the pair features are constants of the data, as in ParT
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bias_cost_is_linear_for_salt_pair_and_quadratic_for_part():
    def flops(model, n):
        return model_cost(ModelSpec(model=model, particles=n, classes=5))["flops_breakdown"]["pair_features"]

    n = 64  # a multiple of p: every partition is filled; then the count is a·N + b
    assert flops("salt_pair", 4 * n) - flops("salt_pair", 2 * n) == 2 * (flops("salt_pair", 2 * n) - flops("salt_pair", n))
    assert flops("part", 256) > 3.9 * flops("part", 128)
    spec = ModelSpec(model="part", particles=n, classes=5, pair_hidden=8)
    ops = pair_bias_ops(spec)
    assert ops["embed_products"] == n * n * 2 * (4 * 8 + 8 * 4)
    plain = model_cost(ModelSpec(model="salt", particles=150, classes=5))
    paired = model_cost(ModelSpec(model="salt_pair", particles=150, classes=5))
    assert paired["params"] == plain["params"] + 4 * 4 + 4  # the linear map 4 features -> 4 heads
    assert paired["flops"] > plain["flops"] and paired["flops_paper"] > plain["flops_paper"]
    assert paired["flops"] < 1.2 * plain["flops"]  # a small price at N = 150


def test_training_calibrates_the_bias_with_the_manifest(tmp_path):
    from jetshards import write_dataset
    from salt.data.shards import load_manifest
    from salt.models import load_model
    from salt.train import train
    from salt.training.settings import TrainSettings

    torch.set_num_threads(1)
    manifest_path = write_dataset(tmp_path / "data", n_train=96, n_val=32, chunk_jets=32)
    manifest = load_manifest(manifest_path)
    settings = TrainSettings.from_dict({"schedule": [[32, 1]], "loader": "memory", "workers": 0})
    train(manifest_path, {"model": "salt_pair"}, settings, seed=1, device="cpu", out_dir=tmp_path / "out")
    model, _ = load_model(tmp_path / "out" / "model.pt")
    index = [manifest["features"].index(name) for name in ("pt", "deta", "dphi")]
    norm = manifest["normalisation"]
    assert model.pair.input_index.tolist() == index
    assert torch.allclose(model.pair.input_scale, torch.tensor([norm["scale"][i] for i in index], dtype=torch.float32))
    assert torch.allclose(model.pair.input_center, torch.tensor([norm["center"][i] for i in index], dtype=torch.float32))
    assert model.pair.embed[-1].weight.abs().sum() > 0  # one epoch of training moved the bias off zero


def test_every_model_has_a_schema_entry_and_a_report_label():
    import yaml

    from salt.models import MODELS
    from salt.report.inputs import FAMILY_LABELS, FAMILY_ORDER

    schema = yaml.safe_load((Path(__file__).parent.parent / "workflow/schemas/config.schema.yaml").read_text())
    assert sorted(schema["$defs"]["variant"]["properties"]["model"]["enum"]) == sorted(MODELS)
    assert sorted(FAMILY_LABELS) == sorted(FAMILY_ORDER) == sorted(MODELS)


@pytest.mark.parametrize("variant", ["part", "salt_pair"])
def test_pair_features_stay_fp32_under_bf16_autocast(variant):
    """m² as a bf16 product would be off by far more than its float32 floor (ln m² by units for
    collinear pairs); the features are computed in fp32 whatever the autocast."""
    x, mask = physical_jets(6, 12, seed=8)
    x[:, 3, 1:] = x[:, 2, 1:]  # a collinear pair
    model = pair_model(variant, 12, mask=True)
    exact = model.pair.features(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = model.pair.features(x, mask)
    assert under.dtype == torch.float32
    assert torch.equal(under, exact)
