"""The fused Triton forward's cases, run under Triton's CPU interpreter (shared by test_fused_triton.py).

TRITON_INTERPRET=1 must be set before Triton is first imported (triton.language's own
helpers are compiled or interpreted at import), so the cases run in a child process:
`python tests/fusedcheck.py` prints {case: largest difference} as JSON. The interpreter runs programs
one after another, so the cases are small (N <= 40, three jets), except for one jet of each
N = 150-200 reference fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "reference_models"

RANDOM_SPECS: dict[str, dict[str, Any]] = {
    # N not divisible by p; tiles of 16 rows cross partition edges
    "salt_n37_p4": dict(model="salt", particles=37, classes=5),
    "salt_n21_p1_h1_c1": dict(model="salt", particles=21, classes=1, partitions=1, heads=1),
    "salt_n30_p3_h2_2blocks_mask": dict(model="salt", particles=30, classes=3, partitions=3, heads=2, blocks=2,
                                        mask=True),
    "salt_n8_p5_emptyparts_mask": dict(model="salt", particles=8, classes=2, partitions=5, mask=True),
    "salt_n40_d24_ff8_3blocks_evenconv": dict(model="salt", particles=40, classes=4, d_model=24, d_ff=8, heads=2,
                                              partitions=4, blocks=3, conv_heights=(2, 3)),
    "salt_noconv_n33_mask_mean": dict(model="salt_noconv", particles=33, classes=5, mask=True, aggregation="mean"),
    "salt_nopartition_n24_sum": dict(model="salt_nopartition", particles=24, classes=1, aggregation="sum"),
    "linformer_n20_h2_2blocks_mask": dict(model="linformer", particles=20, classes=3, heads=2, blocks=2, mask=True),
    "salt_n17_f5_p2": dict(model="salt", particles=17, classes=2, features=5, partitions=2),
}


def fixture_cases() -> list[str]:
    """The linear-attention reference fixtures."""
    index = json.loads((FIXTURES / "index.json").read_text())
    return sorted(k for k, v in index.items() if v["model"] == "salt-family")


def scaled_diff(got: Any, expected: Any) -> float:
    """max |got - expected| / max(1, max |expected|): fp32 rounding grows with the logits' size
    (a sum over particles reaches tens), so large logits are compared relatively."""
    return (got - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def run_cases() -> dict[str, float]:
    """Every case's largest `scaled_diff` of fused to expected: random specs against eager (several tiles per jet
    and one; with and without a mask), fixtures against eager and against the Keras probabilities."""
    import numpy as np
    import torch

    from salt.kernels.fused import FusedClassifier
    from salt.models import ModelSpec, build_model
    from salt.models.reference import load_reference_weights, spec_from_reference

    torch.set_num_threads(1)
    diffs: dict[str, float] = {}
    for name, kwargs in RANDOM_SPECS.items():
        spec = ModelSpec(**kwargs)
        torch.manual_seed(len(name))
        model = build_model(spec).eval()
        with torch.no_grad():  # biases, DyT's β and the conv bias start at zero: make every parameter matter
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(3, spec.particles, spec.features, generator=g)
        mask = torch.rand(3, spec.particles, generator=g) > 0.4
        mask[0], mask[1] = False, True  # an empty jet and a full one
        worst = 0.0
        with torch.no_grad():
            for block_n in (16, 64):
                fused = FusedClassifier(model, block_n=block_n)
                worst = max(worst, scaled_diff(fused(x, mask), model(x, mask)))
                if spec.mask:
                    worst = max(worst, scaled_diff(fused(x), model(x)))
        diffs[name] = worst
    index = json.loads((FIXTURES / "index.json").read_text())
    for case in fixture_cases():
        spec = spec_from_reference(case, index[case])
        model = build_model(spec).eval()
        with np.load(FIXTURES / f"{case}.npz") as data:
            arrays = {k: data[k] for k in data.files}
        load_reference_weights(model, arrays, source=case)
        count = 16 if spec.particles <= 32 else 1
        x = torch.from_numpy(arrays["inputs"][:count].astype(np.float32))
        with torch.no_grad():
            logits = FusedClassifier(model)(x)
            eager = scaled_diff(logits, model(x))
        probs = torch.sigmoid(logits) if spec.classes == 1 else torch.softmax(logits, -1)
        keras = float(np.abs(probs.numpy() - arrays["probabilities"][:count]).max())
        diffs[case] = max(eager, keras)
    return diffs


def run_interpreted(timeout: float = 600) -> dict[str, float]:
    """run_cases() in a child process under TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"fusedcheck.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("fusedcheck.py: set TRITON_INTERPRET=1 (the kernel runs on Triton's CPU interpreter)")
    print(json.dumps(run_cases()))
