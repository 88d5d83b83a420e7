"""Particle Transformer's pairwise interaction features as an additive attention bias.

For particles a, b, ParT (Qu, Li, Qian 2022, arXiv 2202.03772, and its code,
weaver-core's ``pairwise_lv_fts``) feeds four features of the pair to a pointwise
network whose output, one number per head, is added to the attention logits:

    ln kT = ln(min(pT_a, pT_b) ΔR),   ln z = ln(min(pT_a, pT_b) / (pT_a + pT_b)),
    ln ΔR,  ΔR² = Δy² + Δφ²,           ln m² = ln((E_a + E_b)² - |p_a + p_b|²),

each argument clamped below at ε = 1e-8 as in ParT's code. Two uses here:

* ``part``: all N×N particle pairs, as in ParT (quadratic in N).
* ``salt_pair``: (particle, partition) pairs, each of SAL-T's p partitions represented by
  the four-momentum sum of its real particles (the same contiguous slots that SAL-T's
  block-diagonal E/F project; padding excluded), so the cost stays linear in N.

Four-vectors, derived on load: the shards hold pT, Δη, Δφ relative to the jet axis, and
the constituents are taken massless, p = pT (cos Δφ, sin Δφ, sinh Δη, cosh Δη). That is the
lab four-vector boosted along z by the jet's rapidity and rotated by its azimuth, and all
four features are invariant under both, so no jet axis is needed and the features are
exact for massless constituents (ParT uses the measured masses, below 1 GeV for hadrons).
m² comes from the Minkowski product, m² = m_b² + 2 p_a·p_b (one batched matmul over all
pairs). In float32 that, like ParT's (E_a + E_b)² - |p_a + p_b|², is rounding noise of
order 1e-7 E_a E_b for (nearly) collinear pairs, a particle with itself included; so m² is
floored at 2e-5 E_a E_b (jet-frame energies; an opening angle of about 6 mrad), where the
noise is 1% of the floor, and the feature is a deterministic function of the jet. For the
same reason ΔR is floored at 1e-4 (ParT: 1e-8): a particle against a partition of itself
alone has ΔR ~ 1e-6 of rounding in the partition's rapidity and φ.

Embedding: ParT runs BatchNorm + three 1x1 convolutions of width 64 over the pairs; at
SAL-T's size (d_model 16) that alone would outweigh the model, so the default is a
linear map of the four features to one bias per head (``pair_hidden: 0``), and
``pair_hidden: k`` gives a 1x1-conv network 4 -> k -> GELU -> heads. The last layer starts
at zero: a pair-bias model begins as exactly its plain model and learns the bias.
The bias is computed once per jet and shared by every block, as in ParT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from salt.models.keras_init import keras_dense_
from salt.models.spec import ModelSpec

EPS = 1e-8  # ParT's clamp on every logarithm's argument
M2_RESOLUTION = 2e-5  # m² below this × E_a E_b (jet frame) is float32 rounding: it reads as that floor
DELTA_R_RESOLUTION = 1e-4  # ΔR below this (a particle and a partition of itself) is rounding: the floor
PAIR_FEATURES = ("ln_kt", "ln_z", "ln_delta_r", "ln_m2")  # ParT's order
KINEMATIC_INPUTS = ("pt", "deta", "dphi")  # physical features the bias is computed from


class Kinematics(NamedTuple):
    """pT, rapidity, φ (B, M), four-momenta (B, 4, M) as (px, py, pz, E), and m² (None: massless)."""

    pt: torch.Tensor
    y: torch.Tensor
    phi: torch.Tensor
    p4: torch.Tensor
    m2: torch.Tensor | None = None


def pairwise_features(a: Kinematics, b: Kinematics) -> list[torch.Tensor]:
    """ParT's four features of every pair of a (B, N) and b (B, K), each (B, K, N), in
    PAIR_FEATURES order; a must be massless. Particles run along the last axis, so that with
    K = p the loops stay long. Every logarithm's argument is clamped at EPS first, as in ParT
    (which also keeps log off its slow path for zeros)."""
    dy = a.y[:, None, :] - b.y[:, :, None]
    dphi = a.phi[:, None, :] - b.phi[:, :, None]
    dphi = dphi - (2 * math.pi) * torch.round(dphi * (0.5 / math.pi))  # wrapped; inside ±π bit for bit
    delta = torch.sqrt(dy * dy + dphi * dphi).clamp_(min=DELTA_R_RESOLUTION)
    pt_a, pt_b = a.pt[:, None, :], b.pt[:, :, None]
    ptmin = torch.minimum(pt_a, pt_b)
    ln_kt = torch.log((ptmin * delta).clamp_(min=EPS))
    ln_z = torch.log((ptmin / (pt_a + pt_b).clamp_(min=EPS)).clamp_(min=EPS))
    ln_delta = torch.log(delta)
    metric = b.p4.new_tensor([-2.0, -2.0, -2.0, 2.0])  # 2 p_a·p_b = 2 (E_a E_b - p⃗_a·p⃗_b)
    m2 = torch.bmm((b.p4 * metric[:, None]).transpose(1, 2), a.p4)
    if b.m2 is not None:
        m2 = m2 + b.m2[:, :, None]
    floor = b.p4[:, 3, :, None] * (M2_RESOLUTION * a.p4[:, 3])[:, None, :]  # the noise of float32's product
    ln_m2 = torch.log(torch.maximum(m2, floor).clamp_(min=EPS))
    return [ln_kt, ln_z, ln_delta, ln_m2]


def particle_kinematics(pt: torch.Tensor, y: torch.Tensor, phi: torch.Tensor) -> Kinematics:
    """Massless particles in the jet frame: p = pT (cos φ, sin φ, sinh y, cosh y), the
    hyperbolic functions from one exp (PyTorch's CPU sinh and cosh are not vectorised)."""
    half_e, half_inv = 0.5 * torch.exp(y), 0.5 * torch.exp(-y)
    p4 = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * (half_e - half_inv), pt * (half_e + half_inv)], 1)
    return Kinematics(pt, y, phi, p4)


def partition_kinematics(particles: Kinematics, partitions: int) -> Kinematics:
    """Each of SAL-T's contiguous partitions of ceil(N/p) slots (the last one shorter; trailing
    ones empty when p > ceil(N/chunk)) as the sum of its four-momenta; a zero sum gives zeros
    (ParT's rapidity, clamped). m² below M2_RESOLUTION E² is rounding and reads as 0."""
    b, _, n = particles.p4.shape
    chunk = math.ceil(n / partitions)
    p4 = F.pad(particles.p4, (0, chunk * partitions - n)).view(b, 4, partitions, chunk).sum(-1)
    px, py, pz, e = p4.unbind(1)
    pt2 = px * px + py * py
    rapidity = 0.5 * torch.log1p(2 * pz / (e - pz).clamp(min=1e-20))
    m2 = (e - pz) * (e + pz) - pt2
    m2 = m2 * (m2 > M2_RESOLUTION * e * e)  # below the resolution (one particle alone): massless
    return Kinematics(torch.sqrt(pt2), rapidity, torch.atan2(py, px), p4, m2)


class PairBias(nn.Module):
    """Inputs (B, N, F) and mask -> the additive logit bias (B, H, K, N), K = N or p.

    The model sees normalised inputs; the physical pT, Δη, Δφ are recovered with the
    normalisation of the data the model is trained on (buffers, saved with the weights:
    `calibrate`). The defaults read them unnormalised from the first three columns."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.heads = spec.heads
        self.partitions = spec.partitions if spec.attention == "linear" else None
        widths = [len(PAIR_FEATURES), spec.pair_hidden, spec.heads] if spec.pair_hidden else [len(PAIR_FEATURES), spec.heads]
        self.embed = nn.ModuleList(keras_dense_(nn.Linear(i, o)) for i, o in zip(widths, widths[1:]))
        nn.init.zeros_(self.embed[-1].weight)
        nn.init.zeros_(self.embed[-1].bias)
        self.register_buffer("input_index", torch.arange(len(KINEMATIC_INPUTS)))
        self.register_buffer("input_center", torch.zeros(len(KINEMATIC_INPUTS)))
        self.register_buffer("input_scale", torch.ones(len(KINEMATIC_INPUTS)))

    @torch.no_grad()
    def calibrate(self, features: Sequence[str], normalisation: dict[str, Any]) -> None:
        """Where pT, Δη, Δφ sit among the model's input `features`, and the (center, scale) the
        loader normalised them with (a shard manifest's "normalisation")."""
        missing = [name for name in KINEMATIC_INPUTS if name not in features]
        if missing:
            raise ValueError(f"pairwise bias needs features {list(KINEMATIC_INPUTS)}; the data have "
                             f"{list(features)} (missing {missing})")
        index = [list(features).index(name) for name in KINEMATIC_INPUTS]
        for key in ("center", "scale"):
            if len(normalisation.get(key, ())) != len(features):
                raise ValueError(f"normalisation {key!r} has {len(normalisation.get(key, ()))} values; "
                                 f"expected one per feature {list(features)}")
        self.input_index.copy_(torch.tensor(index))
        self.input_center.copy_(torch.tensor([float(normalisation["center"][i]) for i in index]))
        self.input_scale.copy_(torch.tensor([float(normalisation["scale"][i]) for i in index]))

    def features(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The pair features (4, B, K, N) of inputs x (B, N, F), feature-major so that the 1x1
        convolutions (ParT's embedding) are single matrix products; padded slots count as
        empty (zero four-momentum). Like ParT's, they are constants of the data: no gradient flows
        back into x through them (ΔR and atan2 have no derivative at zero). They are computed in
        fp32 under autocast too: m² as a bf16 product would carry noise of 4e-3 E_a E_b, far above
        the float32 floor M2_RESOLUTION assumes."""
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.features(x.float(), mask)
        physical = x.detach().index_select(-1, self.input_index) * self.input_scale + self.input_center
        if mask is not None:
            physical = physical * mask[..., None]
        pt, y, phi = physical.select(-1, 0).clamp(min=0), physical.select(-1, 1), physical.select(-1, 2)
        particles = particle_kinematics(pt, y, phi)
        keys = particles if self.partitions is None else partition_kinematics(particles, self.partitions)
        return torch.stack(pairwise_features(particles, keys))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The bias (B, H, K, N): head h's logit of particle n for key k is raised by [b, h, k, n]."""
        h = self.features(x, mask)
        _, b, k, n = h.shape
        h = h.view(h.shape[0], -1)
        for i, layer in enumerate(self.embed):  # 1x1 convolutions over the pairs
            if i:
                h = F.gelu(h)
            h = torch.addmm(layer.bias[:, None], layer.weight, h)
        return h.view(-1, b, k, n).transpose(0, 1)
