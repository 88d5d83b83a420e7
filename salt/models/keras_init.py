"""Keras' default initialisation, so that training from scratch starts where the authors' did.

Keras initialises every kernel with glorot-uniform and every bias with zeros. Its fan
rule differs from PyTorch's for tensors of rank > 2: the receptive field is the
product of all axes but the last two (fan_in = shape[-2]·rf, fan_out = shape[-1]·rf),
so an E matrix of shape (H, N, p) gets fan_in = H·N and fan_out = H·p.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as keras.initializers.GlorotUniform computes them for a kernel of `shape`."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


@torch.no_grad()
def glorot_uniform_(tensor: torch.Tensor, keras_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Fill `tensor` from U(-l, l), l = sqrt(6 / (fan_in + fan_out)), fans taken from `keras_shape`
    (the layout Keras would give the same weight; defaults to the tensor's own shape)."""
    fan_in, fan_out = keras_fans(tuple(keras_shape or tensor.shape))
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tensor.uniform_(-limit, limit)


@torch.no_grad()
def keras_dense_(layer: nn.Linear) -> nn.Linear:
    """Re-initialise a Linear like keras.layers.Dense (its kernel is weight.T: same fans, swapped)."""
    glorot_uniform_(layer.weight, (layer.in_features, layer.out_features))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer
