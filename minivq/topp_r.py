"""Topological Precision and Recall (TopP&R, Kim et al., NeurIPS 2023), vectorised.

Size letters: N real points, M fake points, D feature dimension, R rows of one block,
B bootstrap resamples, G grid points (any set of query points).

TopP&R asks two questions with a kernel density estimate (KDE) and a confidence band:
  fidelity  (TopP) -- which share of the *significant* fake samples lies inside the
                      statistically significant support of the real data?
  diversity (TopR) -- which share of the significant real samples lies inside the
                      significant support of the fake data?
and summarises them by their harmonic mean, TopF1.

Recipe (as the authors' package computes it when D > 3; we use it for every D >= 1):
  1. Bandwidth per set, "balloon" rule with k = 5*D: for row i = 0 .. N-k-1 take the k-th
     smallest distance from point i to the points *after* it (j > i); sort those N-k values
     and take the one at 0-based index int(0.5*(N-k)) - 1.  (This depends on the row order;
     ``bandwidth="knn"`` gives an order-free alternative, see :func:`kernel_bandwidth`.)
  2. Cosine-kernel density, left unnormalised:  S_A,h(p) = sum_{a in A, |p-a| <= h} cos(pi/2 |p-a|/h).
     The official code multiplies by (1/N)(pi/(4h))^D; a positive constant per set changes
     no comparison below, so we skip it (it also under/overflows for large D).
  3. Confidence band c_A: resample A with replacement B = 10 times, theta_b = max_p |S_A(p) - S_A_b(p)|
     over the points p of A, and c_A = quantile(theta, 1 - alpha) (linear interpolation).
  4. A point p of A is "kept" (significant) when S_A(p) > c_A.
  5. TopP = #{kept fakes y with S_X(y) > c_X} / #{kept fakes};  TopR likewise with roles swapped.

Implementation: a resample is a vector of counts (numpy.bincount of the drawn indices), so
S_A_b(p) = sum_j counts_b[j] K(p, a_j): one matrix product of the kernel block with the
(N, 1+B) matrix [ones | counts].  Distances are formed block by block (R rows at a time), so
memory stays O(R*N) and N = M = 20,000 fits in well under 4 GB.

Reproducibility: BLAS adds the terms of a matrix product in an order that depends on the CPU
kernel, the thread count and the block shape, so a distance can differ in its last bits from
one machine (or block size) to the next.  A score is a sum of many kernel values and moves only
by such round-off; but a bandwidth *is* one distance, so the few k-th neighbour distances that
can decide it are re-measured in a fixed order (:func:`exact_order_statistics`) and h comes out
bit for bit the same everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK_ENTRIES = 1 << 22      # entries of one (R, N) float64 distance block (32 MiB)
K_PER_DIM = 5                # k = 5 * D neighbours for the balloon bandwidth


# ---------------------------------------------------------------- distances and kernel
def _as_points(a, name: str) -> np.ndarray:
    """Validate a (N, D) array of finite numbers and cast it to float32 (as the official code)."""
    a = np.asarray(a)
    if a.ndim == 1:
        raise ValueError(f"{name} must be a 2-D array (points, features); got shape {a.shape} "
                         f"(use {name}[:, None] for 1-D features)")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (points, features); got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    a = a.astype(np.float32)                                   # (N, D)
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.all(np.isfinite(a), axis=1)))
        raise ValueError(f"{name} contains NaN or infinite values ({bad} of {a.shape[0]} rows)")
    return a


def augment_right(b: np.ndarray) -> np.ndarray:
    """Rows [-2 b_j, 1, |b_j|^2] (M, D+2) so that one matrix product gives squared distances."""
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([-2.0 * b, np.ones((b.shape[0], 1)),
                           np.einsum("md,md->m", b, b)[:, None]], axis=1)  # (M, D+2)


def sq_distance_block(a: np.ndarray, b_aug: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (R, M) in float64 between rows of a (R, D) and b, given as augment_right(b).

    |a-b|^2 = |a|^2 + 1*|b|^2 - 2 a.b is the dot product of [a, |a|^2, 1] with [-2b, 1, |b|^2]:
    one BLAS call.  Round-off can leave tiny negative values for (near-)equal points; callers
    clip.  Centre the data first so the cancellation error stays near float64 round-off.
    """
    a = np.asarray(a, dtype=np.float64)
    a_aug = np.concatenate([a, np.einsum("rd,rd->r", a, a)[:, None],
                            np.ones((a.shape[0], 1))], axis=1)  # (R, D+2)
    return a_aug @ b_aug.T                                     # (R, M)


def distance_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances in float64 between the rows of a (R, D) and b (M, D) -> (R, M)."""
    d2 = sq_distance_block(a, augment_right(b))                # (R, M)
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


def row_blocks(n_rows: int, n_cols: int, block_entries: int | None = None):
    """Yield (start, stop) row ranges so that one (rows, n_cols) block has ~block_entries entries
    (default: the module constant BLOCK_ENTRIES, read at call time so tests can shrink it)."""
    block_entries = BLOCK_ENTRIES if block_entries is None else block_entries
    step = max(1, min(n_rows, block_entries // max(n_cols, 1)))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def cosine_kernel(d2: np.ndarray, h: float) -> np.ndarray:
    """From squared distances d2 (R, M): cos(pi/2 * d/h) where d = sqrt(d2) <= h, else 0 -> (R, M).

    Only the entries inside the support (a few per cent in high D) get a sqrt and a cos: a
    slightly generous test on d2 finds the candidates, the exact test d <= h decides.
    """
    k = np.zeros(d2.shape)                                     # (R, M)
    cand = np.flatnonzero(d2 <= (h * h) * (1.0 + 1e-9))        # flat indices of candidates
    d = np.sqrt(np.maximum(d2.ravel()[cand], 0.0))
    inside = d <= h
    k.ravel()[cand[inside]] = np.cos((np.pi / 2) * (d[inside] / h))
    return k


def cosine_kde(points, queries, h: float) -> np.ndarray:
    """Unnormalised cosine-kernel density S(q) = sum_a K(|q - a|) of points (N, D) at queries (G, D) -> (G,).

    Multiply by (1/N) * (pi / (4h))^D for a density that integrates to one.
    """
    p = _as_points(points, "points").astype(np.float64)
    q = _as_points(queries, "queries").astype(np.float64)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"points have {p.shape[1]} features but queries have {q.shape[1]}")
    centre = p.mean(axis=0)                                    # (D,)
    p, q = p - centre, q - centre
    p_aug = augment_right(p)                                   # (N, D+2)
    out = np.empty(q.shape[0])                                 # (G,)
    for s, e in row_blocks(q.shape[0], p.shape[0]):
        out[s:e] = cosine_kernel(sq_distance_block(q[s:e], p_aug), h).sum(axis=1)
    return out


# ---------------------------------------------------------------- bandwidth
def _kth_sq(a: np.ndarray, k: int, later_only: bool) -> np.ndarray:
    """k-th smallest squared distance (BLAS values) from each row i of a (N, D) to the rows
    j > i (later_only: rows 0 .. N-k-1 -> (N-k,)) or to every j != i (-> (N,)), block by block."""
    n = a.shape[0]
    rows = n - k if later_only else n
    a_aug = augment_right(a)                                   # (N, D+2)
    kth = np.empty(rows)                                       # (rows,)
    for s, e in row_blocks(rows, n):
        if later_only:
            # columns j > s only; inside the block, also hide j <= i (its lower triangle)
            d2 = sq_distance_block(a[s:e], a_aug[s + 1:])      # (R, N-s-1)
            below = np.tril_indices(e - s, -1)                 # column c is row j = s+1+c: hide c < r
            d2[:, :e - s][below] = np.inf
        else:
            d2 = sq_distance_block(a[s:e], a_aug)              # (R, N)
            d2[np.arange(e - s), np.arange(s, e)] = np.inf     # exclude the point itself
        kth[s:e] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return kth


def exact_kth_sq(a: np.ndarray, i: int, k: int, later_only: bool) -> float:
    """k-th smallest |a_i - a_j|^2 over j > i (later_only) or j != i, each summed over the features
    in index order: elementwise operations only (one rounding each, no BLAS), so the same bits on
    every CPU, thread count and block size."""
    n = a.shape[0]
    cols = np.arange(i + 1, n) if later_only else np.delete(np.arange(n), i)
    d2 = np.zeros(cols.shape[0])                               # (C,)
    for j in range(a.shape[1]):
        d2 += (a[cols, j] - a[i, j]) ** 2
    return float(np.partition(d2, k - 1)[k - 1])


def exact_order_statistics(a: np.ndarray, kth2: np.ndarray, ranks, k: int, later_only: bool) -> np.ndarray:
    """Order statistics (0-based ranks) of the rows' k-th squared distances, in fixed-order terms.

    kth2 are BLAS values from :func:`_kth_sq`.  Each is a dot product of D+2 terms whose absolute
    values add up to at most (|a_i| + |a_j|)^2 <= 4 m^2 (m = max |a_i|), so, in whatever order BLAS
    sums them, it lies within about (2D+2) 2^-53 * 4 m^2 of the true value, and the fixed-order sum
    within (D+3) 2^-53 * 4 m^2: together less than tol = 16 (D+2) eps m^2 (eps = 2^-52; 2.5 times
    the bound).  An order statistic moves by at most tol, so rows whose value lies more than 2 tol
    below (above) the BLAS order statistic are below (above) it in exact terms too; only the rows in
    between (usually one) are re-measured with :func:`exact_kth_sq`.  Returns (len(ranks),).
    """
    tol = 16 * (a.shape[1] + 2) * np.finfo(np.float64).eps * np.max(np.einsum("nd,nd->n", a, a))
    out = []
    for rank in ranks:
        t = np.partition(kth2, rank)[rank]                     # the BLAS order statistic
        n_below = int(np.sum(kth2 < t - 2 * tol))
        near = np.flatnonzero(np.abs(kth2 - t) <= 2 * tol)     # rows that may hold it exactly
        exact = np.sort([exact_kth_sq(a, i, k, later_only) for i in near])
        out.append(exact[rank - n_below])
    return np.array(out)


def kth_neighbour_distances(a, k: int) -> np.ndarray:
    """Distance from each point of a (N, D) to its k-th nearest *other* point -> (N,) float64.

    Duplicates count as neighbours at distance 0.  Works block by block, O(R*N) memory.  These
    are BLAS values (their last bits may depend on the machine); :func:`kernel_bandwidth` re-measures
    the ones it needs.
    """
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k-th neighbour needs 1 <= k < number of points ({n}); got k = {k}")
    a = a - a.mean(axis=0)                                     # (N, D) centred for accuracy
    # sqrt is monotone, so the k-th smallest squared distance gives the k-th smallest distance
    return np.sqrt(np.maximum(_kth_sq(a, k, later_only=False), 0.0))


def min_points(dim: int) -> int:
    """Fewest points a set needs for the balloon bandwidth with k = 5*dim: k + 2."""
    return K_PER_DIM * dim + 2


def kernel_bandwidth(a, k: int, rule: str = "official") -> float:
    """Kernel bandwidth h of one point set a (N, D) from its k-nearest-neighbour distances.

    rule="official": the authors' balloon estimator -- for i = 0 .. N-k-1 the k-th smallest
        distance to the rows *after* i, sorted, element int(0.5*(N-k)) - 1.  It depends on the
        order of the rows (the last rows see few neighbours), but it reproduces their numbers.
    rule="knn": order-free -- numpy.median over all N points of the distance to the k-th
        nearest *other* point.
    Needs N >= k + 2.  Returns h in the units of the features, the same bits on every machine
    and for every block size: the distances that decide it are summed in a fixed order.
    """
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    if n < k + 2:
        raise ValueError(f"bandwidth needs at least k + 2 = {k + 2} points for k = {k}; got {n}")
    if rule not in ("official", "knn"):
        raise ValueError(f"bandwidth rule must be 'official' or 'knn'; got {rule!r}")
    a = a - a.mean(axis=0)                                     # (N, D) centred for accuracy
    later_only = rule == "official"
    kth2 = _kth_sq(a, k, later_only)                           # (N-k,) or (N,) squared
    m = kth2.shape[0]
    ranks = [int(0.5 * m) - 1] if later_only else [(m - 1) // 2, m // 2]  # the median: middle one or two
    # sqrt is monotone, so order statistics of squared distances give those of the distances
    return float(np.median(np.sqrt(exact_order_statistics(a, kth2, ranks, k, later_only))))


# ---------------------------------------------------------------- confidence band
def _as_random_state(rng):
    """None -> RandomState(0); int -> RandomState(int); a RandomState or Generator is used as is."""
    if rng is None:
        return np.random.RandomState(0)
    if isinstance(rng, (int, np.integer)):
        return np.random.RandomState(int(rng))
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    raise ValueError(f"rng must be None, an int seed, numpy.random.RandomState or Generator; got {type(rng).__name__}")


def bootstrap_counts(n: int, n_boot: int, rng) -> np.ndarray:
    """Counts of each of n points in n_boot resamples with replacement -> (n, n_boot) float64.

    Each resample is one call rng.choice(n, n, replace=True), in order, exactly the draws the
    official code makes (on a RandomState that is the same stream as rng.randint(0, n, n)).
    """
    counts = np.empty((n, n_boot))                             # (N, B)
    for b in range(n_boot):
        counts[:, b] = np.bincount(rng.choice(n, n, replace=True), minlength=n)
    return counts


def self_scores(a: np.ndarray, h: float, counts: np.ndarray) -> np.ndarray:
    """Density of a (N, D) at its own points, once as is and once per resample -> (N, 1+B).

    Column 0 is S_A(a_i); column 1+b is S_{A_b}(a_i) = sum_j counts[j, b] K(|a_i - a_j|).
    In matrix form out = K @ W with W = [1 | counts] and the symmetric kernel matrix K (N, N),
    which we visit once per pair: the row block [s, e) meets columns j >= s only.  Its square
    part Q (pairs inside the block) is used as is; its rectangle P (columns j >= e) serves
    twice, as P @ W[e:] for the block's rows and as P^T @ W[s:e] for the later rows.
    """
    n = a.shape[0]
    weights = np.concatenate([np.ones((n, 1)), counts], axis=1)  # (N, 1+B)
    a_aug = augment_right(a)                                   # (N, D+2)
    out = np.zeros((n, weights.shape[1]))                      # (N, 1+B)
    for s, e in row_blocks(n, n // 2 + 1):
        k = cosine_kernel(sq_distance_block(a[s:e], a_aug[s:]), h)  # (R, N-s): columns j >= s
        q, p = k[:, :e - s], k[:, e - s:]                      # (R, R) square, (R, N-e) rectangle
        out[s:e] += q @ weights[s:e] + p @ weights[e:]
        out[e:] += p.T @ weights[s:e]
    return out


def confidence_band(scores: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """scores (N, 1+B) from :func:`self_scores` -> (c, theta (B,)), c = quantile(theta, 1 - alpha)."""
    theta = np.max(np.abs(scores[:, :1] - scores[:, 1:]), axis=0)  # (B,)
    return float(np.quantile(theta, 1 - alpha)), theta


def cross_scores(x: np.ndarray, y: np.ndarray, h_x: float, h_y: float):
    """S_X,h_x(y) for every fake y (M,) and S_Y,h_y(x) for every real x (N,), sharing one distance pass."""
    x_aug = augment_right(x)                                   # (N, D+2)
    s_x_at_y = np.empty(y.shape[0])                            # (M,)
    s_y_at_x = np.zeros(x.shape[0])                            # (N,)
    for s, e in row_blocks(y.shape[0], x.shape[0]):
        d2 = sq_distance_block(y[s:e], x_aug)                  # (R, N)
        s_x_at_y[s:e] = cosine_kernel(d2, h_x).sum(axis=1)
        s_y_at_x += cosine_kernel(d2, h_y).sum(axis=0)
    return s_x_at_y, s_y_at_x


def random_projection(a: np.ndarray, out_dim: int, seed: int) -> np.ndarray:
    """Project (N, D) -> (N, out_dim) float32 with a seeded Gaussian map, std sqrt(2/(D+out_dim)).

    This is the Xavier-normal scale the official code uses, but not its torch random stream,
    so TopP&R numbers for D > out_dim cannot match the official package bit for bit.
    """
    d = a.shape[1]
    w = np.random.RandomState(seed).normal(0.0, np.sqrt(2.0 / (d + out_dim)), size=(d, out_dim))  # (D, out_dim)
    return (a.astype(np.float64) @ w).astype(np.float32)      # (N, out_dim)


# ---------------------------------------------------------------- TopP&R
@dataclass
class TopPRResult:
    """TopP&R scores plus what a learner needs to draw them (scores are unnormalised sums)."""
    fidelity: float              # TopP: share of kept fakes inside the real support
    diversity: float             # TopR: share of kept reals inside the fake support
    top_f1: float                # harmonic mean of the two (0 when either is <= 1e-4)
    h_real: float                # bandwidth of the real set (feature units)
    h_fake: float                # bandwidth of the fake set
    c_real: float                # confidence band of the real density (same units as the scores)
    c_fake: float                # confidence band of the fake density
    k: int                       # neighbours used for the bandwidth (5 * D)
    score_real: np.ndarray = field(repr=False)          # (N,) S_X(x)
    score_fake: np.ndarray = field(repr=False)          # (M,) S_Y(y)
    score_fake_on_real: np.ndarray = field(repr=False)  # (M,) S_X(y): real density at fakes
    score_real_on_fake: np.ndarray = field(repr=False)  # (N,) S_Y(x): fake density at reals
    theta_real: np.ndarray = field(repr=False)          # (B,) bootstrap sup-deviations, real
    theta_fake: np.ndarray = field(repr=False)          # (B,) bootstrap sup-deviations, fake

    @property
    def real_kept(self) -> np.ndarray:
        """(N,) bool: real points inside their own significant support."""
        return self.score_real > self.c_real

    @property
    def fake_kept(self) -> np.ndarray:
        """(M,) bool: fake points inside their own significant support."""
        return self.score_fake > self.c_fake

    def as_dict(self) -> dict:
        """The three headline numbers, with the official package's key names."""
        return {"fidelity": self.fidelity, "diversity": self.diversity, "Top_F1": self.top_f1}


def top_pr(real, fake, alpha: float = 0.1, rng=None, bandwidth: str = "official",
           project_dim: int | None = 32, n_bootstrap: int = 10, project_seed: int = 0) -> TopPRResult:
    """TopP&R of fake samples against real samples.

    real: (N, D), fake: (M, D), any D >= 1, N and M may differ; both are cast to float32 and
    distances are computed in float64 from those values.  Each set needs at least 5*D + 2 points.
    alpha: significance level of the bootstrap confidence band.
    rng: None (seed 0), an int seed, numpy.random.RandomState or Generator.  With
        rng=numpy.random.RandomState(s) the result equals the official package (top-pr 0.2.1,
        D <= 32) called right after numpy.random.seed(s).
    bandwidth: "official" (order-dependent balloon rule) or "knn" (see :func:`kernel_bandwidth`).
    project_dim: when D > project_dim, project both sets with a seeded Gaussian map first
        (see :func:`random_projection`); None never projects.
    Returns a :class:`TopPRResult`; fidelity/diversity are 0 when no point of a set is kept.
    """
    x = _as_points(real, "real")                               # (N, D)
    y = _as_points(fake, "fake")                               # (M, D)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real has {x.shape[1]} features but fake has {y.shape[1]}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1; got {alpha}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1; got {n_bootstrap}")
    if project_dim is not None and x.shape[1] > project_dim:
        x = random_projection(x, project_dim, project_seed)    # (N, P)
        y = random_projection(y, project_dim, project_seed)    # (M, P)
    dim = x.shape[1]
    k = K_PER_DIM * dim
    need = min_points(dim)
    for name, a in (("real", x), ("fake", y)):
        if a.shape[0] < need:
            raise ValueError(f"TopP&R with {dim} features uses k = 5*{dim} = {k} neighbours and needs at "
                             f"least {need} {name} points; got {a.shape[0]}")
    rng = _as_random_state(rng)

    # one shift for both sets: distances are unchanged, round-off of |a|^2 + |b|^2 - 2ab shrinks
    centre = x.astype(np.float64).mean(axis=0)                 # (D,)
    x64 = x.astype(np.float64) - centre                        # (N, D)
    y64 = y.astype(np.float64) - centre                        # (M, D)

    h_x = kernel_bandwidth(x64, k, bandwidth)
    h_y = kernel_bandwidth(y64, k, bandwidth)
    counts_x = bootstrap_counts(x64.shape[0], n_bootstrap, rng)  # (N, B) all real draws first,
    counts_y = bootstrap_counts(y64.shape[0], n_bootstrap, rng)  # (M, B) then all fake draws
    sx = self_scores(x64, h_x, counts_x)                       # (N, 1+B)
    sy = self_scores(y64, h_y, counts_y)                       # (M, 1+B)
    c_x, theta_x = confidence_band(sx, alpha)
    c_y, theta_y = confidence_band(sy, alpha)
    s_x_at_y, s_y_at_x = cross_scores(x64, y64, h_x, h_y)

    real_kept = sx[:, 0] > c_x
    fake_kept = sy[:, 0] > c_y
    n_real, n_fake = int(real_kept.sum()), int(fake_kept.sum())
    fidelity = int(np.sum(fake_kept & (s_x_at_y > c_x))) / n_fake if n_fake else 0.0
    diversity = int(np.sum(real_kept & (s_y_at_x > c_y))) / n_real if n_real else 0.0
    f1 = 2 * fidelity * diversity / (fidelity + diversity) if min(fidelity, diversity) > 1e-4 else 0.0
    return TopPRResult(fidelity=fidelity, diversity=diversity, top_f1=f1, h_real=h_x, h_fake=h_y,
                       c_real=c_x, c_fake=c_y, k=k, score_real=sx[:, 0], score_fake=sy[:, 0],
                       score_fake_on_real=s_x_at_y, score_real_on_fake=s_y_at_x,
                       theta_real=theta_x, theta_fake=theta_y)
