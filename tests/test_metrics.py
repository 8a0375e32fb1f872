"""Tests for minivq.metrics / minivq.topp_r: official TopP&R numbers, a loop-based reference
written straight from the recipe, PRDC, Fréchet distance, classifier scores, codebook usage."""
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from minivq import topp_r
from minivq.metrics import (accuracy, codebook_usage, confusion_matrix, cosine_kde, digit_score,
                            frechet_distance, kernel_bandwidth, prdc, top_pr)


# ------------------------------------------------------------------ reference, one point at a time
def _ref_bandwidth(a, k):
    d = cdist(a, a)                                            # float64 from the float32 values
    kth = [sorted(d[i, i + 1:])[k - 1] for i in range(len(a) - k)]
    kth = sorted(kth)
    return kth[int(0.5 * len(kth)) - 1]


def _ref_kde(data, positions, h):
    d = cdist(positions, data)
    return np.array([np.sum(np.cos((np.pi / 2) * (row[row <= h] / h))) for row in d])


def _ref_band(data, h, alpha, rng, repeat=10):
    p_hat = _ref_kde(data, data, h)
    theta = []
    for _ in range(repeat):
        boot = data[rng.choice(np.arange(len(data)), size=len(data), replace=True)]
        theta.append(np.max(np.abs(p_hat - _ref_kde(boot, data, h))))
    return np.quantile(theta, 1 - alpha), p_hat


def _ref_top_pr(real, fake, alpha=0.1, seed=0):
    """The recipe of the issue, written plainly (resampled data arrays, Python loops)."""
    x, y = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    k = 5 * x.shape[1]
    h_x, h_y = _ref_bandwidth(x, k), _ref_bandwidth(y, k)
    rng = np.random.RandomState(seed)
    c_x, s_xx = _ref_band(x, h_x, alpha, rng)
    c_y, s_yy = _ref_band(y, h_y, alpha, rng)
    fake_kept, real_kept = s_yy > c_y, s_xx > c_x
    p = np.sum(fake_kept & (_ref_kde(x, y, h_x) > c_x)) / np.sum(fake_kept)
    r = np.sum(real_kept & (_ref_kde(y, x, h_y) > c_y)) / np.sum(real_kept)
    return dict(fidelity=p, diversity=r, h_real=h_x, h_fake=h_y, c_real=c_x, c_fake=c_y)


def _official_cases():
    data = np.random.RandomState(0)
    real = data.normal(size=(500, 16))
    fake = data.normal(size=(500, 16))
    centers = 10 * np.eye(16)[:4]
    real2 = centers[np.repeat(np.arange(4), 125)] + data.normal(size=(500, 16))
    fake2 = centers[np.repeat(np.arange(2), 250)] + data.normal(size=(500, 16))
    return (real, fake), (real2, fake2)


# ------------------------------------------------------------------ TopP&R
def test_top_pr_matches_official_package_numbers():
    (real, fake), (real2, fake2) = _official_cases()
    r = top_pr(real, fake, rng=np.random.RandomState(0))
    assert abs(r.fidelity - 0.9682926829268292) < 1e-12
    assert abs(r.diversity - 0.9831730769230769) < 1e-12
    assert abs(r.top_f1 - 0.9756761466401475) < 1e-12
    r2 = top_pr(real2, fake2, rng=np.random.RandomState(0))   # two of four modes: mode collapse
    assert abs(r2.fidelity - 1.0) < 1e-12
    assert abs(r2.diversity - 0.446) < 1e-12
    assert abs(r2.top_f1 - 0.6168741355463347) < 1e-12


def test_rng_choice_equals_randint_stream():
    # the official draw np.random.choice(np.arange(N), N, replace=True) is randint(0, N, N)
    a, b = np.random.RandomState(5), np.random.RandomState(5)
    for n in (7, 500):
        np.testing.assert_array_equal(a.choice(np.arange(n), size=n, replace=True), b.randint(0, n, n))
    counts = topp_r.bootstrap_counts(50, 3, np.random.RandomState(9))
    rs = np.random.RandomState(9)
    for j in range(3):
        np.testing.assert_array_equal(counts[:, j], np.bincount(rs.randint(0, 50, 50), minlength=50))


@pytest.mark.parametrize("dim,n,m", [(1, 40, 25), (2, 60, 45), (3, 50, 70), (5, 90, 60)])
def test_top_pr_matches_loop_reference(dim, n, m, monkeypatch):
    g = np.random.RandomState(dim)
    real = g.normal(size=(n, dim))
    fake = g.normal(size=(m, dim)) * 1.3 + 0.5
    ref = _ref_top_pr(real, fake, seed=3)
    monkeypatch.setattr(topp_r, "BLOCK_ENTRIES", 7 * max(n, m))  # several blocks, odd sizes
    r = top_pr(real, fake, rng=3)
    for key in ("h_real", "h_fake", "c_real", "c_fake"):
        assert abs(getattr(r, key) - ref[key]) <= 1e-12 * abs(ref[key]), key
    assert abs(r.fidelity - ref["fidelity"]) < 1e-12
    assert abs(r.diversity - ref["diversity"]) < 1e-12
    assert r.score_real.shape == (n,) and r.score_fake_on_real.shape == (m,)
    np.testing.assert_allclose(r.score_fake_on_real, _ref_kde(np.float32(real), np.float32(fake), r.h_real),
                               rtol=1e-12, atol=1e-12)


def test_block_size_does_not_change_the_result(monkeypatch):
    (real, fake), _ = _official_cases()
    full = top_pr(real[:200], fake[:300], rng=1)
    monkeypatch.setattr(topp_r, "BLOCK_ENTRIES", 3 * 300 + 1)
    small = top_pr(real[:200], fake[:300], rng=1)
    # bandwidths are re-measured in a fixed order (topp_r.kth_smallest_exact): the same bits
    assert (small.h_real, small.h_fake) == (full.h_real, full.h_fake)
    # A score sums <= 300 kernel values; BLAS adds them (and the D+2 products of each distance) in
    # an order that depends on the block shape and the CPU.  Distance round-off moves a kernel value
    # by ~1e-14, the sum's by ~300 * 1.1e-16 relative: < 1e-13 relative in all.  Observed: 1e-15.
    for key in ("score_real", "score_fake", "score_fake_on_real", "score_real_on_fake"):
        np.testing.assert_allclose(getattr(small, key), getattr(full, key), rtol=1e-12, err_msg=key)
    # c is a quantile of max |S - S_b|: it moves by at most twice a score's change, < 2e-11 for
    # scores below 100 (c is about 8 here, so < 3e-12 relative)
    assert abs(small.c_real - full.c_real) < 1e-10 * full.c_real
    assert abs(small.c_fake - full.c_fake) < 1e-10 * full.c_fake
    # The counts are exact because no score lies within round-off of its band: each is at least
    # 0.5 % away here (checked), ten orders of magnitude beyond what the block size can move it.
    for score, band in ((full.score_real, full.c_real), (full.score_fake, full.c_fake),
                        (full.score_fake_on_real, full.c_real), (full.score_real_on_fake, full.c_fake)):
        assert np.min(np.abs(score - band)) > 1e-3 * band
    assert (small.fidelity, small.diversity) == (full.fidelity, full.diversity)
    assert (small.real_kept == full.real_kept).all() and (small.fake_kept == full.fake_kept).all()


def _fixed_order_sq(a, i, cols):
    """|a_i - a_j|^2 for j in cols, summed feature by feature in index order (no BLAS)."""
    d2 = np.zeros(len(cols))
    for j in range(a.shape[1]):
        d2 += (a[cols, j] - a[i, j]) ** 2
    return d2


@pytest.mark.parametrize("rule", ["official", "knn"])
def test_bandwidth_is_the_same_bits_for_every_block_size(rule, monkeypatch):
    """h is one distance, so it must not carry BLAS round-off: whatever the block size (and so the
    GEMM shapes, kernels and summation order), it equals the k-th distance summed in index order
    -- one rounding per operation, bit for bit on every IEEE machine.  Compared with ==."""
    for seed, (n, dim, scale) in enumerate([(60, 3, 1.0), (97, 7, 1e3), (45, 1, 1e-3), (130, 16, 1.0)]):
        g = np.random.RandomState(seed)
        a = g.normal(size=(n, dim)) * scale
        a[: n // 5] *= 6                                        # a spread of norms
        a[n // 2] = a[n // 3]                                   # a duplicate (distance 0)
        k = min(5 * dim, n - 2)
        c = a - a.mean(axis=0)
        if rule == "official":                                  # k-th of the later rows, then index int(0.5(n-k))-1
            kth = [np.sort(_fixed_order_sq(c, i, np.arange(i + 1, n)))[k - 1] for i in range(n - k)]
            expect = np.sqrt(np.sort(kth))[int(0.5 * (n - k)) - 1]
        else:                                                   # median of the k-th nearest other point
            kth = [np.sort(_fixed_order_sq(c, i, np.delete(np.arange(n), i)))[k - 1] for i in range(n)]
            expect = np.median(np.sqrt(kth))
        for block in (1 << 22, 3 * n + 1, n + 1, 1):
            monkeypatch.setattr(topp_r, "BLOCK_ENTRIES", block)
            assert kernel_bandwidth(a, k, rule=rule) == expect, (seed, block)


def test_knn_bandwidth_is_order_free_and_matches_brute_force():
    g = np.random.RandomState(2)
    a = g.normal(size=(80, 3))
    k = 15
    d = cdist(a, a)
    np.fill_diagonal(d, np.inf)
    expect = np.median(np.sort(d, axis=1)[:, k - 1])
    assert abs(kernel_bandwidth(a, k, rule="knn") - expect) < 1e-12 * expect
    assert kernel_bandwidth(a[g.permutation(80)], k, rule="knn") == pytest.approx(expect, rel=1e-12)
    # the official rule looks only at later rows, so it does depend on the order
    hs = {round(kernel_bandwidth(a[g.permutation(80)], k), 12) for _ in range(5)}
    assert len(hs) > 1
    a32 = a.astype(np.float32)                                 # top_pr casts to float32 first
    d = cdist(a32, a32)
    np.fill_diagonal(d, np.inf)
    expect32 = np.median(np.sort(d, axis=1)[:, k - 1])
    r = top_pr(a, a[::-1] + 0.1, bandwidth="knn", rng=0)
    assert abs(r.h_real - expect32) < 1e-12 * expect32


def test_identical_sets():
    g = np.random.RandomState(4)
    a = g.normal(size=(120, 4))
    r = top_pr(a, a.copy(), rng=0)
    assert r.h_real == r.h_fake
    np.testing.assert_allclose(r.score_fake_on_real, r.score_fake, rtol=1e-12)
    # each side is kept by its own band; the set with the higher band is wholly inside the other
    assert max(r.fidelity, r.diversity) == 1.0
    assert min(r.fidelity, r.diversity) > 0.8


def test_top_pr_errors_are_clear():
    g = np.random.RandomState(0)
    with pytest.raises(ValueError, match="at least 17 real points"):
        top_pr(g.normal(size=(16, 3)), g.normal(size=(40, 3)))
    with pytest.raises(ValueError, match="at least 17 fake points"):
        top_pr(g.normal(size=(40, 3)), g.normal(size=(16, 3)))
    top_pr(g.normal(size=(17, 3)), g.normal(size=(17, 3)))  # the minimum itself works
    bad = g.normal(size=(40, 2))
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="fake contains NaN"):
        top_pr(g.normal(size=(40, 2)), bad)
    with pytest.raises(ValueError, match="2 features but fake has 3"):
        top_pr(g.normal(size=(40, 2)), g.normal(size=(40, 3)))
    with pytest.raises(ValueError, match="2-D array"):
        top_pr(g.normal(size=40), g.normal(size=40))
    with pytest.raises(ValueError, match="'official' or 'knn'"):
        top_pr(g.normal(size=(40, 2)), g.normal(size=(40, 2)), bandwidth="scott")


def test_projection_above_32_dims():
    g = np.random.RandomState(6)
    real = g.normal(size=(200, 40))
    fake = g.normal(size=(200, 40))
    a = top_pr(real, fake, rng=0)
    b = top_pr(real, fake, rng=0)
    assert a.k == 160 and a.fidelity == b.fidelity and a.diversity == b.diversity
    assert 0.8 < a.fidelity <= 1.0 and 0.8 < a.diversity <= 1.0
    w = topp_r.random_projection(np.eye(40, dtype=np.float32), 32, seed=0)  # the map itself
    assert w.shape == (40, 32) and abs(w.std() - np.sqrt(2 / 72)) < 0.02
    with pytest.raises(ValueError, match="at least 202 real points"):
        top_pr(real, fake, rng=0, project_dim=None)             # unprojected, k = 200


def test_cosine_kde_matches_loop():
    g = np.random.RandomState(1)
    pts, q = g.normal(size=(30, 2)), g.normal(size=(11, 2)) * 2
    np.testing.assert_allclose(cosine_kde(pts, q, 0.9), _ref_kde(np.float32(pts), np.float32(q), 0.9),
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ PRDC
def test_prdc_reference_numbers():
    (real, fake), _ = _official_cases()
    out = prdc(real, fake, k=5)
    assert out["precision"] == pytest.approx(0.872, abs=1e-12)
    assert out["recall"] == pytest.approx(0.866, abs=1e-12)
    assert out["density"] == pytest.approx(1.0516, abs=1e-12)
    assert out["coverage"] == pytest.approx(0.972, abs=1e-12)


def test_prdc_matches_dense_formulas_and_blocks(monkeypatch):
    g = np.random.RandomState(3)
    real, fake = g.normal(size=(70, 3)), g.normal(size=(45, 3)) + 0.7
    k = 4
    rr, ff, rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r = np.sort(rr, axis=1)[:, k]                              # column 0 is the point itself
    f = np.sort(ff, axis=1)[:, k]
    monkeypatch.setattr(topp_r, "BLOCK_ENTRIES", 100)
    out = prdc(real, fake, k=k)
    # prdc's distances (one GEMM per block) and cdist's differ by round-off (~1e-15 relative); the
    # counts still agree exactly because no real-fake distance lies that close to a radius
    assert min(np.min(np.abs(rf - r[:, None]) / r[:, None]), np.min(np.abs(rf - f) / f)) > 1e-9
    assert out["precision"] == np.mean((rf < r[:, None]).any(axis=0))
    assert out["recall"] == np.mean((rf < f[None, :]).any(axis=1))
    assert out["density"] == pytest.approx((rf < r[:, None]).sum(axis=0).mean() / k, abs=1e-15)
    assert out["coverage"] == np.mean(rf.min(axis=1) < r)
    with pytest.raises(ValueError, match="more than 5 fake samples"):
        prdc(real, fake[:5], k=5)


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_distance_against_sqrtm_and_closed_form():
    g = np.random.RandomState(8)
    x = g.normal(size=(300, 6)) @ g.normal(size=(6, 6))
    y = g.normal(size=(250, 6)) @ g.normal(size=(6, 6)) + 0.3
    c_x, c_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    s = scipy.linalg.sqrtm(c_x @ c_y)
    expect = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(c_x + c_y - 2 * s.real)
    assert frechet_distance(x, y) == pytest.approx(expect, rel=1e-9)
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    a, b = g.normal(size=(400, 1)), 2 * g.normal(size=(500, 1)) + 1
    closed = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-10)
    assert abs(frechet_distance(x, x)) < 1e-9
    rank_deficient = np.c_[x[:, :3], x[:, :3]]                 # singular covariance still works
    assert np.isfinite(frechet_distance(rank_deficient, rank_deficient + 0.1))


# ------------------------------------------------------------------ classifier scores
def test_digit_score_accuracy_confusion():
    eye = np.eye(10)
    assert digit_score(eye[np.arange(50) % 10]) == pytest.approx(10.0, rel=1e-9)
    assert digit_score(np.full((20, 10), 0.1)) == pytest.approx(1.0, abs=1e-12)
    assert digit_score(eye[np.zeros(30, int)]) == pytest.approx(1.0, abs=1e-9)  # confident, no variety
    half = np.r_[eye[np.zeros(10, int)], eye[np.ones(10, int)]]
    assert digit_score(half) == pytest.approx(2.0, rel=1e-9)
    with pytest.raises(ValueError, match="sum to 1"):
        digit_score(np.full((3, 10), 0.2))
    labels = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 2, 2, 2, 1, 1])
    assert accuracy(pred, labels) == pytest.approx(4 / 6)
    assert accuracy(np.eye(3)[pred] * 5.0, labels) == pytest.approx(4 / 6)   # scores -> argmax
    cm = confusion_matrix(labels, pred, num_classes=4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(labels, pred, num_classes=2)


def test_codebook_usage():
    idx = np.array([[0, 0, 1], [1, 3, 3]])                     # codes 0, 1, 3 used twice; 2 never
    u = codebook_usage(idx, K=4)
    np.testing.assert_array_equal(u["histogram"], [2, 2, 0, 2])
    assert u["perplexity"] == pytest.approx(3.0, rel=1e-12)
    assert u["active_fraction"] == 0.75 and u["active"] == 3
    assert codebook_usage(np.zeros(9, int), K=8)["perplexity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook_usage(np.array([0, 4]), K=4)


def test_cosine_kernel_support_is_closed():
    # |p - a| <= h is inside (cos(pi/2) ~ 6e-17, not 0); just beyond h is outside
    d2 = np.array([[4.0, 4.0 * (1 + 1e-15), 0.0, 1.0]])
    k = topp_r.cosine_kernel(d2, 2.0)
    assert k[0, 0] == np.cos(np.pi / 2) and k[0, 0] > 0
    assert k[0, 1] == 0.0 and k[0, 2] == 1.0 and k[0, 3] == pytest.approx(np.cos(np.pi / 4), rel=1e-15)
