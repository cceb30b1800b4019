"""Forward passes agree with straightforward numpy references of the stated semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec, forward, init_params


def rnn_reference(p, x):
    w_ih, w_hh, w_out = (np.asarray(p[k], np.float64) for k in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "linear.weight"))
    h = np.zeros((x.shape[0], w_hh.shape[0]))
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t : t + 1] @ w_ih.T + h @ w_hh.T, 0)
    return h @ w_out.T


def transformer_reference(p, x, n_layers):
    h = np.asarray(p["embed.weight"], np.float64)[x] + np.asarray(p["pos_embed.weight"], np.float64)[None]
    d = h.shape[-1]
    for i in range(n_layers):
        w = np.asarray(p[f"attns.{i}.in_proj_weight"], np.float64)
        q, k, v = h @ w[:d].T, h @ w[d : 2 * d].T, h @ w[2 * d :].T
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        h = h + (a @ v) @ np.asarray(p[f"attns.{i}.out_proj.weight"], np.float64).T
    return h[:, -1] @ np.asarray(p["unembed.weight"], np.float64).T


def test_parameter_count_of_the_challenge_model():
    assert ModelSpec("rnn", "2nd_argmax", 16, 10).n_params == 432


def test_rnn_forward_matches_reference(official):
    model = official["algzoo/example_2nd_argmax"]
    x = np.random.default_rng(0).standard_normal((512, 10)).astype(np.float32)
    got = np.asarray(jax.jit(forward)(model, jnp.asarray(x)))
    ref = rnn_reference(model.params, x)
    # float32 round-off: logits reach ~200, so compare relative to the largest magnitude.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_transformer_forward_matches_reference(official):
    model = official["algzoo/longest_cycle-d2-n3"]
    x = model.spec.task_obj.all_inputs(3)
    got = np.asarray(jax.jit(forward)(model, jnp.asarray(x)))
    ref = transformer_reference(model.params, x, 2)
    # Nearly saturated softmaxes amplify float32 round-off (in float64 the two agree to
    # 1e-12); 1e-4 of the largest logit is still far below any logit gap that matters.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


def test_mlp_forward_matches_reference(key):
    spec = ModelSpec("mlp", "2nd_argmax", 8, 5)
    model = Model(spec, {k: np.asarray(v) for k, v in init_params(spec, key).items()})
    x = np.random.default_rng(1).standard_normal((64, 5)).astype(np.float32)
    p = {k: np.asarray(v, np.float64) for k, v in model.params.items()}
    ref = np.maximum(np.maximum(x @ p["mlp.0.weight"].T, 0) @ p["mlp.1.weight"].T, 0) @ p["linear.weight"].T
    np.testing.assert_allclose(np.asarray(forward(model, jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def test_wrong_weight_shape_is_refused():
    spec = ModelSpec("rnn", "2nd_argmax", 4, 3)
    params = {"rnn.weight_ih_l0": np.zeros((4, 1)), "rnn.weight_hh_l0": np.zeros((4, 4)), "linear.weight": np.zeros((2, 4))}
    with pytest.raises(AlgzuError, match=r"linear.weight has shape \(2, 4\), expected \(3, 4\)"):
        Model(spec, params)


def test_transformer_on_continuous_task_is_refused():
    with pytest.raises(AlgzuError, match="discrete tasks only"):
        ModelSpec("transformer", "2nd_argmax", 4, 3)


def test_flax_module_shares_names_and_forward(official):
    from algzu.model import flax_module

    model = official["algzoo/2nd_argmax-d2-n2"]
    module = flax_module(model.spec)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((16, 2)), jnp.float32)
    variables = module.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in variables["params"].items()} == model.spec.param_shapes
    got = module.apply({"params": {k: jnp.asarray(v) for k, v in model.params.items()}}, x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(forward(model, x)))
