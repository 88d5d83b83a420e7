"""The fused Triton forward (salt/kernels) against the eager model and the authors' Keras outputs.

The kernel runs on the CPU through Triton's interpreter, in one child process for the whole
module (tests/fusedcheck.py says why); the checks that never launch the kernel run here.
"""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'salt[triton]')")

from fusedcheck import RANDOM_SPECS, fixture_cases, run_interpreted  # noqa: E402

from salt.kernels.fused import FusedClassifier, coverage, fused_model  # noqa: E402
from salt.models import ModelSpec, build_model  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def diffs() -> dict[str, float]:
    return run_interpreted()


@pytest.mark.parametrize("case", sorted(RANDOM_SPECS))
def test_fused_matches_eager_on_random_specs(diffs, case):
    assert diffs[case] <= TOLERANCE, f"{case}: scaled |fused - eager| {diffs[case]:.2e}"


@pytest.mark.parametrize("case", fixture_cases())
def test_fused_reproduces_reference_fixtures(diffs, case):
    assert diffs[case] <= TOLERANCE, f"{case}: max |diff| to eager or the Keras probabilities {diffs[case]:.2e}"


def test_full_attention_falls_back_to_eager_with_one_logged_line(caplog):
    model = build_model(ModelSpec(model="transformer", particles=16, classes=2))
    with caplog.at_level(logging.WARNING, logger="salt.kernels.fused"):
        assert fused_model(model) is model
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "full softmax attention" in lines[0], lines
    with pytest.raises(ValueError, match="full softmax attention"):
        FusedClassifier(model)


def test_too_wide_models_are_not_covered():
    assert "d_model 256" in coverage(ModelSpec(model="salt", particles=16, classes=2, d_model=256))
    assert coverage(ModelSpec(model="salt", particles=16, classes=2)) is None


def test_kernel_needs_cuda_outside_the_interpreter(monkeypatch):
    fused = FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        fused(torch.zeros(1, 16, 3))


def test_bad_input_shape_is_named():
    fused = FusedClassifier(build_model(ModelSpec(model="salt", particles=16, classes=2)))
    with pytest.raises(ValueError, match=r"expected \(batch, 16, 3\)"):
        fused(torch.zeros(2, 15, 3))
