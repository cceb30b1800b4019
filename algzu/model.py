"""Models of the zoo: specs, weights as named arrays, and exact jit-able forward passes.

Three architectures, all bias-free, following ARC's AlgZoo:

* ``rnn``: one-layer ReLU RNN with input size 1. ``h_0 = 0``,
  ``h_t = relu(W_ih x_t + W_hh h_{t-1})``, outputs ``W_out h_n``.
  Parameters ``d + d^2 + n_out * d`` (432 for d=16, n=10).
* ``transformer``: attention-only. Token plus position embeddings, ``n_layers`` layers of
  multi-head self-attention (no biases, no mask, softmax scaled by ``1/sqrt(d_head)``),
  each added residually; logits from the unembedding at the last position.
* ``mlp``: ReLU MLP over the whole sequence with two hidden layers of width ``d``.

Weights are a flat dict of numpy arrays named as in AlgZoo's PyTorch state dicts (see
:data:`PARAM_SHAPES`), so checkpoints round-trip without renaming. :class:`Model` is a
pytree whose leaves are the weights and whose spec is static, so it can be passed straight
through ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from algzu.errors import AlgzuError
from algzu.task import Task, get_task

Arch = Literal["rnn", "transformer", "mlp"]
ARCHS: tuple[str, ...] = ("rnn", "transformer", "mlp")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything about a model except its weights.

    Attributes:
        arch: ``rnn``, ``transformer`` or ``mlp``.
        task: registered task name.
        d: hidden size (the residual width for transformers).
        n: sequence length.
        n_layers: attention layers (transformer only).
        n_heads: attention heads per layer (transformer only).
    """

    arch: Arch
    task: str
    d: int
    n: int
    n_layers: int = 1
    n_heads: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise AlgzuError(f"unknown architecture {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.d < 1 or self.n < 1 or self.n_layers < 1 or self.n_heads < 1:
            raise AlgzuError(f"model sizes must be positive: {self}")
        if self.arch == "transformer" and self.d % self.n_heads:
            raise AlgzuError(f"d={self.d} is not divisible by n_heads={self.n_heads}")
        self.task_obj.check_n(self.n)
        if self.arch == "transformer" and self.task_obj.input_kind != "discrete":
            raise AlgzuError("the attention-only transformer embeds tokens: discrete tasks only")

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready fields: what sidecars store and ground-truth caches hash."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """The spec from :meth:`to_dict`'s fields (unknown keys ignored); AlgzuError if malformed."""
        try:
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except TypeError as e:
            raise AlgzuError(f"bad model spec {data}: {e}") from None

    @property
    def task_obj(self) -> Task:
        return get_task(self.task)

    @property
    def n_outputs(self) -> int:
        return self.task_obj.n_outputs(self.n)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self)

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())


def param_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a model's weights (AlgZoo's PyTorch names)."""
    d, n, out = spec.d, spec.n, spec.n_outputs
    if spec.arch == "rnn":
        return {"rnn.weight_ih_l0": (d, 1), "rnn.weight_hh_l0": (d, d), "linear.weight": (out, d)}
    if spec.arch == "mlp":
        return {"mlp.0.weight": (d, n), "mlp.1.weight": (d, d), "linear.weight": (out, d)}
    vocab = spec.task_obj.vocab_size(n)
    shapes = {"embed.weight": (vocab, d), "pos_embed.weight": (n, d)}
    for i in range(spec.n_layers):
        shapes[f"attns.{i}.in_proj_weight"] = (3 * d, d)
        shapes[f"attns.{i}.out_proj.weight"] = (d, d)
    shapes["unembed.weight"] = (out, d)
    return shapes


@dataclasses.dataclass(frozen=True)
class Model:
    """A spec plus its weights. A pytree: ``params`` are leaves, ``spec`` is static."""

    spec: ModelSpec
    params: Mapping[str, jax.Array | np.ndarray]

    def __post_init__(self) -> None:
        expected = self.spec.param_shapes
        if set(self.params) != set(expected):
            raise AlgzuError(
                f"{self.spec.arch} weights must be named {sorted(expected)}, got {sorted(self.params)}"
            )
        for name, shape in expected.items():
            got = tuple(np.shape(self.params[name]))
            if got != shape:
                raise AlgzuError(f"weight {name} has shape {got}, expected {shape} for {self.spec}")

    @property
    def n_params(self) -> int:
        return self.spec.n_params

    def numpy(self) -> Model:
        """The same model with float32 numpy weights (for numpy estimators and saving)."""
        return Model(self.spec, {k: np.asarray(v, np.float32) for k, v in self.params.items()})


jax.tree_util.register_dataclass(Model, data_fields=["params"], meta_fields=["spec"])


def forward(model: Model, x: jax.Array) -> jax.Array:
    """Model outputs for a batch of inputs ``x`` of shape ``(batch, n)``: ``(batch, n_out)``."""
    arch = model.spec.arch
    if arch == "rnn":
        return rnn_forward(model.params, x)
    if arch == "mlp":
        return mlp_forward(model.params, x)
    return transformer_forward(model.params, x, model.spec.n_heads)


def rnn_forward(params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    """``h_t = relu(W_ih x_t + W_hh h_{t-1})`` from ``h_0 = 0``; returns ``W_out h_n``.

    The time loop is unrolled (n is at most tens), which XLA fuses better than a scan.
    """
    w_ih = params["rnn.weight_ih_l0"][:, 0][None, :]
    w_hh = params["rnn.weight_hh_l0"]
    w_out = params["linear.weight"]
    h = jax.nn.relu(x[:, 0:1] * w_ih)  # h_0 = 0, so W_hh h_0 vanishes
    for t in range(1, x.shape[1]):
        h = jax.nn.relu(x[:, t : t + 1] * w_ih + h @ w_hh.T)
    return h @ w_out.T


def mlp_forward(params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    """Two ReLU hidden layers over the whole sequence, then a linear readout."""
    h = jax.nn.relu(x @ params["mlp.0.weight"].T)
    h = jax.nn.relu(h @ params["mlp.1.weight"].T)
    return h @ params["linear.weight"].T


def transformer_forward(params: Mapping[str, jax.Array], x: jax.Array, n_heads: int = 1) -> jax.Array:
    """AlgZoo's attention-only transformer on int tokens ``x``; logits at the last position."""
    embed = params["embed.weight"]
    batch, n = x.shape
    d = embed.shape[1]
    d_head = d // n_heads
    h = embed[x] + params["pos_embed.weight"][None, :n]
    layer = 0
    while f"attns.{layer}.in_proj_weight" in params:
        qkv = h @ params[f"attns.{layer}.in_proj_weight"].T
        q, k, v = (t.reshape(batch, n, n_heads, d_head) for t in jnp.split(qkv, 3, axis=-1))
        scores = jnp.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(d_head)
        mixed = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(scores, axis=-1), v)
        h = h + mixed.reshape(batch, n, d) @ params[f"attns.{layer}.out_proj.weight"].T
        layer += 1
    return h[:, -1] @ params["unembed.weight"].T


def init_params(spec: ModelSpec, key: jax.Array) -> dict[str, jax.Array]:
    """PyTorch-style default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Embeddings are N(0, 1) as in ``torch.nn.Embedding``.
    """
    params = {}
    for name, shape in param_shapes(spec).items():
        key, sub = jax.random.split(key)
        if "embed" in name and "unembed" not in name:
            params[name] = jax.random.normal(sub, shape, jnp.float32)
        else:
            bound = 1.0 / math.sqrt(shape[1])
            params[name] = jax.random.uniform(sub, shape, jnp.float32, -bound, bound)
    return params


def flax_module(spec: ModelSpec):
    """A ``flax.linen`` module for ``spec`` whose parameters are the named weights above.

    ``module.init(key, x)["params"]`` has exactly :data:`param_shapes` (AlgZoo's names) and
    ``module.apply({"params": p}, x)`` equals :func:`forward` on ``Model(spec, p)``, so flax
    code (optax loops, checkpointing) and algzu's pure functions share one set of weights.
    An adapter only: nothing in algzu runs it. Needs the ``flax`` extra
    (``pip install 'algzu[flax]'``).

    Raises:
        AlgzuError: flax is not installed.
    """
    try:
        import flax.linen as nn
    except ImportError:
        raise AlgzuError("flax_module needs flax: pip install 'algzu[flax]'") from None

    class AlgZooModel(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            params = {name: self.param(name, lambda key, name=name: init_params(spec, key)[name])
                      for name in param_shapes(spec)}
            return forward(Model(spec, params), x)

    return AlgZooModel()
