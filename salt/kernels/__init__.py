"""Hand-written GPU kernels (Triton) for the models' inference forward; see fused.py."""
