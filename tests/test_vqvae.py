"""VQ-VAE: shapes, encode/decode, and a float64 finite-difference check of every gradient.

The quantiser's argmin has no derivative, so the model's backward is the gradient of a
surrogate in which the stop-gradients are frozen at the base point (indices fixed too):
    S(params) = mse(dec(z_e + C), x) + w_cb mean((z_e0 - cb[idx])^2) + beta mean((z_e - e0)^2)
with z_e = enc(x), C = e0 - z_e0 (value of the straight-through term), z_e0 / e0 the encoder
output / chosen codes at the base point, w_cb = 0 with EMA. S equals the true loss at the
base point and its exact gradient is what backward must return.
"""
import numpy as np
import pytest

from minivq import vqvae as V
from minivq.gradcheck import numerical_gradient, rel_error
from minivq.optim import check_grads

TINY = dict(in_size=8, ch1=3, hidden=4, res_hidden=2, n_res=1, D=3, K=5)


def _tiny(backend, cr, ema, B=2, seed=0):
    cfg = V.VQVAEConfig(cr=cr, ema=ema, beta=0.3, **TINY)
    params = V.init_params(cfg, seed=seed, dtype="float64")
    g = np.random.default_rng(seed + 1)
    # larger weights than the default init so every layer's gradient is well above round-off
    for k in params:
        params[k] = backend.asarray(backend.to_numpy(params[k]) * 3.0)
    x = backend.asarray(g.standard_normal((B, 1, cfg.in_size, cfg.in_size)))
    return cfg, params, x


@pytest.mark.parametrize("cr,ema", [(16, False), (4, True)])
def test_full_model_gradcheck(backend, cr, ema):
    cfg, params, x = _tiny(backend, cr, ema)
    loss, parts, cache = V.forward(params, x, cfg)
    grads = V.backward(cache)
    check_grads(params, grads)
    assert parts["loss"] == pytest.approx(parts["recon"] + parts["codebook"] + parts["commit"], rel=1e-12)

    idx = cache["idx"].reshape(-1)
    ze0 = cache["z_e"].copy()  # (N, D)
    e0 = params["codebook"][idx].copy()  # (N, D)
    B, h, w = cache["shape"]

    def S():
        z_e, _ = V.encoder_forward(params, x, cfg)
        zv = V.to_vectors(z_e)
        zq = V.to_grid(zv + (e0 - ze0), B, h, w)
        x_hat, _ = V.decoder_forward(params, zq, cfg)
        rec = float(((x_hat - x) ** 2).mean())
        cb = 0.0 if ema else float(((ze0 - params["codebook"][idx]) ** 2).mean())
        com = cfg.beta * float(((zv - e0) ** 2).mean())
        return rec + cb + com

    assert S() == pytest.approx(parts["loss"], rel=1e-12)
    worst = {}
    for k in params:
        num = numerical_gradient(S, params[k], h=1e-6)
        if ema and k == "codebook":  # EMA codes get no gradient; S does not depend on them
            assert np.abs(num).max() == 0.0
            worst[k] = float(np.abs(backend.to_numpy(grads[k])).max())
        else:
            worst[k] = rel_error(grads[k], num)
    print(cr, ema, "worst rel error", max(worst.values()), max(worst, key=worst.get))
    bad = {k: v for k, v in worst.items() if not v < 1e-6}
    assert not bad, bad


def test_shapes_and_encode_decode(backend):
    for cr, grid in ((16, 16), (4, 32)):
        cfg = V.VQVAEConfig(cr=cr, hidden=16, ch1=8, res_hidden=4, D=8, K=32)
        assert cfg.grid == grid
        params = V.init_params(cfg, seed=0)
        x = backend.asarray(np.random.default_rng(0).standard_normal((3, 1, 64, 64)).astype(np.float32))
        loss, parts, cache = V.forward(params, x, cfg)
        assert cache["idx"].shape == (3, grid, grid)
        assert cache["x_hat"].shape == (3, 1, 64, 64) and cache["x_hat"].dtype == np.float32
        idx = V.encode(params, x, cfg, batch=2)
        # encode works in chunks of 2: compare with the forward pass on the same chunks, so both
        # make the same float32 GEMMs.  Another batch shape may round z_e differently (BLAS picks
        # kernels by shape and CPU) and flip a near-tie between two codes: the closest two codes
        # here are 2e-5 apart (relative), float32 round-off after a few convolutions ~1e-6.
        chunks = [V.forward(params, x[s:s + 2], cfg)[2] for s in (0, 2)]
        np.testing.assert_array_equal(backend.to_numpy(idx), np.concatenate([backend.to_numpy(c["idx"]) for c in chunks]))
        xh = V.decode(params, idx, cfg, batch=2)
        np.testing.assert_allclose(backend.to_numpy(xh), np.concatenate([backend.to_numpy(c["x_hat"]) for c in chunks]),
                                   rtol=1e-5, atol=1e-6)
        grads = V.backward(cache)
        check_grads(params, grads)
        assert all(g.dtype == np.float32 for g in grads.values())


def test_bad_inputs():
    with pytest.raises(ValueError, match="power of 4"):
        V.param_shapes(V.VQVAEConfig(cr=8))
    cfg = V.VQVAEConfig(cr=16, hidden=8, ch1=4, res_hidden=2, D=4, K=8)
    params = V.init_params(cfg)
    with pytest.raises(ValueError, match="token ids"):
        V.decode(params, np.full((1, 16, 16), 8), cfg)
    with pytest.raises(ValueError, match="shape"):
        V.decode(params, np.zeros((1, 8, 8), dtype=np.int64), cfg)


def test_config_roundtrip():
    cfg = V.VQVAEConfig(cr=4, K=128, ema=False)
    assert V.VQVAEConfig.from_dict(cfg.to_dict()) == cfg
