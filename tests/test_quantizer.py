"""Vector quantiser: lookup, straight-through gradients (float64 finite differences with the
assignment held fixed), EMA, k-means, dead-code restart, usage statistics."""
import numpy as np
import pytest

from minivq import quantizer as Q
from minivq.gradcheck import numerical_gradient, rel_error


def _data(backend, N=37, D=5, K=11, seed=0, dtype=np.float64):
    g = np.random.default_rng(seed)
    z = backend.asarray(g.standard_normal((N, D)).astype(dtype))
    cb = backend.asarray(g.standard_normal((K, D)).astype(dtype))
    return z, cb


def test_nearest_code_matches_brute_force(backend):
    z, cb = _data(backend, N=200, D=7, K=33)
    idx, d2 = Q.nearest_code(z, cb)
    zn, cn = backend.to_numpy(z), backend.to_numpy(cb)
    full = ((zn[:, None, :] - cn[None, :, :]) ** 2).sum(-1)  # (N, K)
    np.testing.assert_array_equal(backend.to_numpy(idx), full.argmin(1))
    np.testing.assert_allclose(backend.to_numpy(d2), full.min(1), rtol=1e-10, atol=1e-12)


def test_forward_values(backend):
    z, cb = _data(backend)
    zq, idx, losses, _ = Q.quantize_forward(z, cb, beta=0.25)
    np.testing.assert_array_equal(backend.to_numpy(zq), backend.to_numpy(cb)[backend.to_numpy(idx)])
    m = float(((backend.to_numpy(zq) - backend.to_numpy(z)) ** 2).mean())
    assert losses["codebook"] == pytest.approx(m, rel=1e-12)
    assert losses["commit"] == pytest.approx(0.25 * m, rel=1e-12)
    _, _, l2, _ = Q.quantize_forward(z, cb, codebook_loss=False)
    assert l2["codebook"] == 0.0


@pytest.mark.parametrize("codebook_loss", [True, False])
def test_straight_through_gradcheck(backend, codebook_loss):
    """Surrogate objective with the stop-gradients written out and the indices frozen:
        S(z_e, e) = sum(g * (z_e + const)) + w * [mean((z_e0 - e[idx])^2) + beta mean((z_e - e0[idx])^2)]
    (z_e0, e0 = values at the base point). Its finite-difference gradient is what the
    straight-through backward must return."""
    z, cb = _data(backend)
    beta, w = 0.3, 1.7
    zq, idx, losses, cache = Q.quantize_forward(z, cb, beta=beta, codebook_loss=codebook_loss)
    g = backend.asarray(np.random.default_rng(1).standard_normal(z.shape))
    dz, dcb = Q.quantize_backward(g, cache, dloss=w)
    z0, cb0 = z.copy(), cb.copy()
    idx_np = backend.to_numpy(idx)

    def S():
        zn, cn, z0n, c0n, gn = (backend.to_numpy(a) for a in (z, cb, z0, cb0, g))
        st = (gn * zn).sum()
        cbl = ((z0n - cn[idx_np]) ** 2).mean() if codebook_loss else 0.0
        com = beta * ((zn - c0n[idx_np]) ** 2).mean()
        return st + w * (cbl + com)

    ez = rel_error(dz, numerical_gradient(S, z))
    ec = rel_error(dcb, numerical_gradient(S, cb)) if codebook_loss else float(np.abs(backend.to_numpy(dcb)).max())
    assert ez < 1e-7, ez
    assert ec < 1e-7, ec
    # the forward's loss values agree with the surrogate's VQ part at the base point
    assert w * (losses["codebook"] + losses["commit"]) == pytest.approx(S() - float((backend.to_numpy(g * z)).sum()),
                                                                        rel=1e-10)


def test_fixed_index_forward_is_gradcheckable(backend):
    """With idx held fixed, the losses are smooth functions; check d(total VQ loss)/d codebook
    and d(commit)/d z_e separately by finite differences of the forward itself."""
    z, cb = _data(backend, N=23, D=3, K=7, seed=3)
    _, idx, _, cache = Q.quantize_forward(z, cb, beta=0.25)
    dz, dcb = Q.quantize_backward(backend.xp.zeros(z.shape), cache, dloss=1.0)
    num_cb = numerical_gradient(lambda: Q.quantize_forward(z, cb, idx=idx)[2]["codebook"], cb)
    num_z = numerical_gradient(lambda: Q.quantize_forward(z, cb, idx=idx)[2]["commit"], z)
    assert rel_error(dcb, num_cb) < 1e-7
    assert rel_error(dz, num_z) < 1e-7


def test_ema_update_and_laplace_smoothing(backend):
    xp = backend.xp
    K, D = 4, 2
    cb = xp.zeros((K, D))
    st = Q.init_state(cb)
    st["ema_count"][:] = 0.0
    st["ema_sum"][:] = 0.0
    z = backend.asarray(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    idx = backend.asarray(np.array([0, 0, 2]))
    Q.ema_update(cb, st, z, idx, decay=0.5, eps=1e-5)
    cnt = np.array([1.0, 0, 0.5, 0])  # 0.5 * (2, 0, 1, 0)
    n = cnt.sum()
    sm = (cnt + 1e-5) / (n + K * 1e-5) * n
    want = np.array([[2.0, 3.0], [0, 0], [2.5, 3.0], [0, 0]]) / sm[:, None]
    np.testing.assert_allclose(backend.to_numpy(cb), want, rtol=1e-12)
    assert np.isfinite(backend.to_numpy(cb)).all()


def test_ema_converges_to_cluster_means(backend):
    g = np.random.default_rng(0)
    centres = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    cb = backend.asarray(centres + g.normal(0, 0.5, centres.shape))
    st = Q.init_state(cb)
    for step in range(400):
        lab = g.integers(0, 3, 256)
        z = backend.asarray(centres[lab] + g.normal(0, 0.3, (256, 2)))
        _, idx, _, _ = Q.quantize_forward(z, cb, codebook_loss=False)
        Q.ema_update(cb, st, z, idx, decay=0.95)
    order = np.argsort(backend.to_numpy(cb)[:, 0] + 10 * backend.to_numpy(cb)[:, 1])
    np.testing.assert_allclose(backend.to_numpy(cb)[order], centres[[0, 1, 2]], atol=0.05)


def test_kmeans_finds_clusters(backend):
    g = np.random.default_rng(0)
    centres = g.normal(0, 10, (8, 3))
    z = backend.asarray(np.repeat(centres, 50, axis=0) + g.normal(0, 0.1, (400, 3)))
    c = backend.to_numpy(Q.kmeans(z, 8, iters=20, seed=1))
    # every true centre has a centroid within 0.2
    d = np.sqrt(((centres[:, None] - c[None]) ** 2).sum(-1)).min(1)
    assert d.max() < 0.2, d
    # fewer points than codes still gives K distinct finite codes
    c2 = backend.to_numpy(Q.kmeans(z[:5], 16, seed=0))
    assert c2.shape == (16, 3) and np.isfinite(c2).all() and len(np.unique(c2.round(9), axis=0)) == 16


def test_dead_code_restart(backend):
    xp = backend.xp
    z, cb = _data(backend, N=50, D=3, K=6)
    cb[5] = 1e3  # far away: never chosen
    st = Q.init_state(cb)
    for step in range(3):
        _, idx, _, _ = Q.quantize_forward(z, cb)
        dead = Q.restart_dead_codes(cb, st, z, idx, after=3, seed=step)
        if step < 2:
            assert dead.shape[0] == 0
    assert 5 in backend.to_numpy(dead).tolist()
    # the restarted code now sits exactly on one of the encoder outputs
    zn = backend.to_numpy(z)
    assert np.min(np.abs(zn - backend.to_numpy(cb)[5]).sum(1)) == 0.0
    assert int(st["unused"][5]) == 0 and float(st["ema_count"][5]) == 1.0


def test_rare_code_restart(backend):
    z, cb = _data(backend, N=64, D=3, K=4)
    zn = backend.to_numpy(z)
    cb[:] = backend.asarray(zn[[0, 1, 2, 3]])
    far = zn[0] + 50.0
    zr = backend.asarray(np.concatenate([zn[:63], far[None]]))  # one vector far away from the rest
    cb[3] = backend.asarray(far)  # code 3 wins only that vector: 1 of 64 each step, an even share is 16
    for share, restarted in ((0.0, False), (0.1, True)):
        c, st = cb.copy(), Q.init_state(cb)
        hits = []
        for step in range(40):
            _, idx, _, _ = Q.quantize_forward(zr, c)
            hits.append(3 in backend.to_numpy(Q.restart_dead_codes(c, st, zr, idx, after=3, seed=step,
                                                                  min_share=share, decay=0.9)).tolist())
        assert any(hits) == restarted, (share, hits)  # never 'unused', so only min_share moves it
        if restarted:
            first = hits.index(True)  # usage starts at 1 per step < 0.1 * 16: restarted at once
            assert first == 0 and not any(hits[first + 1:first + 10])  # then a grace period


def test_usage_stats():
    K = 8
    s = Q.usage_stats(np.arange(16) % K, K)
    assert s["perplexity"] == pytest.approx(8.0)
    assert s["active"] == 1.0
    s = Q.usage_stats(np.array([0, 0, 1, 1]), K)
    assert s["perplexity"] == pytest.approx(2.0) and s["active"] == 0.25
    assert s["hist"].tolist() == [2, 2, 0, 0, 0, 0, 0, 0]
