"""GPT prior: gradient checks (block, whole model), causality, token layout, sampling."""
import math

import numpy as np
import pytest

from minivq import sampling as S
from minivq import transformer as G
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import check_layer, numerical_gradient, rel_error

TINY = dict(n_code=13, context=6, d_model=8, n_layer=2, n_head=2)


def _params64(cfg, seed=0, std=0.3):
    """float64 params with non-trivial LayerNorm gains/biases and biases (so their grads are tested)."""
    p = {k: v.astype("float64") for k, v in G.init_params(cfg, seed=seed, std=std).items()}
    rng = np.random.default_rng(seed + 100)
    for k in p:
        if k.endswith((".g", ".b", ".cg", ".cb")) or ".b_" in k:  # class_norm tables too (they start at 0)
            p[k] = p[k] + asarray(rng.standard_normal(p[k].shape) * 0.2)
    return p


def _seq(cfg, B, seed=0):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, B) if cfg.cond == "class" else None
    prefix = to_numpy(cfg.prefix(digits, n=B))
    return np.concatenate([prefix[:, None], rng.integers(0, cfg.n_code, (B, cfg.context))], axis=1)


def test_block_gradcheck_with_dropout(backend):
    C, T = 8, 5
    rng = np.random.default_rng(0)
    cfg = G.GPTConfig(**{**TINY, "d_model": C})
    bp = G.block_params(_params64(cfg), 0)
    names = list(bp)
    inputs = {"x": asarray(rng.standard_normal((3, T, C))), **{k.replace(".", "_"): v for k, v in bp.items()}}

    def fwd(x, *ws):
        # a fresh generator per call: the same dropout mask every time, as finite differences need
        return G.block_forward(x, dict(zip(names, ws)), n_head=2, dropout=0.25, rng=np.random.default_rng(7))

    def bwd(dout, cache):
        dx, g = G.block_backward(dout, cache)
        return (dx, *[g[k] for k in names])

    errs = check_layer(fwd, bwd, inputs)
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("cond,class_token,every", [("class", "dedicated", False), ("none", "dedicated", False),
                                                   ("class", "shared", False), ("class", "dedicated", True)])
def test_model_gradcheck(backend, cond, class_token, every):
    cfg = G.GPTConfig(**TINY, cond=cond, class_token=class_token, class_every=every)
    p = _params64(cfg)
    seq = asarray(_seq(cfg, 2))
    loss, cache = G.forward(p, cfg, seq)
    grads = G.backward(cache)
    assert set(grads) == set(p) and all(grads[k].shape == p[k].shape for k in p)
    # every parameter for the default layout; the other layouts only differ in the embedding
    # rows and the prefix, so check the parameters the prefix reaches first (keeps the test fast)
    names = list(p) if class_token == "dedicated" and cond == "class" and not every else ["wte", "wpe", "h0.attn.w_qkv", "head.w"]
    worst = max(rel_error(grads[k], numerical_gradient(lambda: G.forward(p, cfg, seq)[0], p[k])) for k in names)
    assert worst < 1e-6, worst


def test_changing_token_t_never_changes_earlier_logits(backend):
    cfg = G.GPTConfig(**TINY)
    p = _params64(cfg, seed=1)
    seq = _seq(cfg, 3, seed=1)
    idx = seq[:, :-1]
    base = to_numpy(G.forward_logits(p, cfg, asarray(idx))[0])  # (B, T, K)
    for t in range(idx.shape[1]):
        idx2 = idx.copy()
        idx2[:, t] = (idx2[:, t] + 1) % cfg.n_code
        lg = to_numpy(G.forward_logits(p, cfg, asarray(idx2))[0])
        assert np.abs(lg[:, :t] - base[:, :t]).max(initial=0.0) < 1e-12
        assert np.abs(lg[:, t:] - base[:, t:]).max() > 1e-6


def test_token_layout_and_initial_loss(backend):
    cfg = G.GPTConfig(n_code=512)
    assert cfg.vocab_size == 512 + 10 + 1 and cfg.start_token == 522
    assert to_numpy(cfg.prefix([0, 9])).tolist() == [512, 521]
    assert to_numpy(G.GPTConfig(cond="none").prefix(None, n=2)).tolist() == [522, 522]
    shared = G.GPTConfig(n_code=512, class_token="shared")
    assert shared.vocab_size == 512 and to_numpy(shared.prefix([3])).tolist() == [3]
    small = G.GPTConfig(n_code=64, context=16, d_model=16, n_layer=1, n_head=2)
    p = G.init_params(small)
    assert p["head.w"].shape == (16, 64) and p["wte"].shape == (75, 16) and p["wpe"].shape == (16, 16)
    loss, _ = G.forward(p, small, asarray(_seq(small, 4)))
    assert abs(loss - math.log(64)) < 0.05  # small init: nearly uniform over the K codes
    with pytest.raises(ValueError):
        G.GPTConfig(cond="none", class_token="shared")
    with pytest.raises(ValueError):
        G.GPTConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="class-conditional"):
        cfg.prefix(None, n=2)
    with pytest.raises(ValueError, match="digits"):
        cfg.prefix([10])


def test_evaluate_matches_forward_loss(backend):
    cfg = G.GPTConfig(**TINY)
    p = _params64(cfg)
    seq = _seq(cfg, 5)
    loss, _ = G.forward(p, cfg, asarray(seq))
    mean, per_pos = G.mean_nll(p, cfg, seq, batch_size=2)
    assert abs(mean - loss) < 1e-12 and per_pos.shape == (cfg.context,)
    assert abs(float(per_pos.mean()) - loss) < 1e-12


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8), dict(top_k=1)])
def test_cached_and_uncached_sampling_agree(backend, kw):
    cfg = G.GPTConfig(**{**TINY, "context": 9})
    p = _params64(cfg, std=0.5)
    a = S.sample(p, cfg, 4, cond=[0, 3, 3, 9], seed=5, use_cache=True, **kw)
    b = S.sample(p, cfg, 4, cond=[0, 3, 3, 9], seed=5, use_cache=False, **kw)
    assert a.shape == (4, 9) and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() < cfg.n_code  # only code tokens are ever emitted
    if kw.get("top_k") == 1:  # greedy: every step takes the argmax of the model's own logits
        seq = np.concatenate([to_numpy(cfg.prefix([0, 3, 3, 9]))[:, None], a], axis=1)
        lg = to_numpy(G.forward_logits(p, cfg, asarray(seq[:, :-1]))[0])
        assert np.array_equal(lg.argmax(-1), a)
    c = S.sample(p, cfg, 4, cond=[0, 3, 3, 9], seed=6, **kw)
    assert kw.get("top_k") == 1 or not np.array_equal(a, c)


def test_class_every_reaches_every_position_and_samples_alike(backend):
    cfg = G.GPTConfig(**{**TINY, "context": 9, "n_layer": 1}, class_every=True)
    p = _params64(cfg, std=0.5)
    for k in ("h0.attn.w_qkv", "h0.attn.w_proj"):  # no attention output: only the embeddings reach position t
        p[k] = p[k] * 0
    idx = _seq(cfg, 2)[:, :-1]
    other = idx.copy()
    other[:, 0] = to_numpy(cfg.prefix([5, 5]))  # another class, the same codes
    a, b = (to_numpy(G.forward_logits(p, cfg, asarray(i))[0]) for i in (idx, other))
    assert np.abs(a - b).min() > 1e-6  # every position's logits read the class
    plain = G.GPTConfig(**{**TINY, "context": 9, "n_layer": 1}, class_every=False)
    a, b = (to_numpy(G.forward_logits(p, plain, asarray(i))[0]) for i in (idx, other))
    assert np.abs(a[:, 1:] - b[:, 1:]).max() < 1e-12  # without it, only through attention
    p = _params64(cfg, std=0.5)
    kw = dict(cond=[0, 3, 3, 9], seed=5, temperature=0.8)
    assert np.array_equal(S.sample(p, cfg, 4, use_cache=True, **kw), S.sample(p, cfg, 4, use_cache=False, **kw))
    for bad in (dict(cond="none"), dict(class_token="shared")):
        with pytest.raises(ValueError, match="class_every"):
            G.GPTConfig(**TINY, class_every=True, **bad)


@pytest.mark.parametrize("order", ["freq", "time"])
def test_grid_order_round_trips(order):
    cfg = G.GPTConfig(n_code=50, context=12, order=order)
    grids = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (N, rows, cols)
    seq = cfg.to_sequence(grids)  # (N, 12)
    first = [0, 1, 2] if order == "freq" else [0, 4, 8]  # along the first row, or down the first column
    assert seq.shape == (2, 12) and seq[0, :3].tolist() == first
    assert np.array_equal(cfg.to_grid(seq, 3, 4), grids)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("order", "class_every")}  # an older checkpoint
    assert G.GPTConfig.from_dict(old).order == "freq" and not G.GPTConfig.from_dict(old).class_every
    assert cfg.class_every and not G.GPTConfig(cond="none").class_every  # the default: on where it applies
    with pytest.raises(ValueError, match="order"):
        G.GPTConfig(order="diagonal")


def test_unconditional_sampling_and_errors(backend):
    cfg = G.GPTConfig(**TINY, cond="none")
    p = _params64(cfg)
    s = S.sample(p, cfg, 3, seed=0)
    assert s.shape == (3, cfg.context) and s.max() < cfg.n_code
    with pytest.raises(ValueError, match="unconditional"):
        S.sample(p, cfg, 3, cond=1)
    with pytest.raises(ValueError, match="temperature"):
        S.sample(p, cfg, 3, temperature=0)


def test_filter_logits_and_draw(backend):
    rng = np.random.default_rng(0)
    logits = asarray(rng.standard_normal((3, 20)))
    p = to_numpy(S.filter_logits(logits, top_k=4))
    assert ((p > 0).sum(-1) == 4).all() and np.allclose(p.sum(-1), 1)
    assert (np.argsort(-to_numpy(logits), -1)[:, :4] == np.argsort(-p, -1, kind="stable")[:, :4]).all()
    ties = asarray(np.array([[3.0, 1.0, 3.0, 3.0, 0.0, 3.0]]))  # four-way tie at the top
    assert (to_numpy(S.filter_logits(ties, top_k=2)) > 0).sum() == 2  # exactly k, not every tied token
    full = to_numpy(S.filter_logits(logits))
    q = to_numpy(S.filter_logits(logits, top_p=0.5))
    for r in range(3):  # the nucleus: the fewest top tokens whose mass reaches 0.5
        order = np.argsort(-full[r])
        n_keep = int(np.searchsorted(np.cumsum(full[r][order]), 0.5) + 1)
        assert set(np.flatnonzero(q[r])) == set(order[:n_keep])
    probs = asarray(np.array([[0.1, 0.2, 0.3, 0.4]]).repeat(1000, 0))
    u = asarray((np.arange(1000) + 0.5) / 1000)
    counts = np.bincount(to_numpy(S.draw(probs, u)), minlength=4)
    assert counts.tolist() == [100, 200, 300, 400]


def test_guided_sampling_combines_logits(backend):
    """Classifier-free guidance: s = 1 is plain conditional sampling; s = 2 with greedy
    decoding takes argmax(l_u + 2 (l_c - l_u)) computed from both models' full forwards;
    cached and uncached guided decoding agree."""
    cfg = G.GPTConfig(**{**TINY, "context": 9})
    cfg_u = G.GPTConfig(**{**TINY, "context": 9, "cond": "none"})
    p, pu = _params64(cfg, std=0.5), _params64(cfg_u, seed=3, std=0.5)
    digits = [0, 3, 3, 9]
    plain = S.sample(p, cfg, 4, cond=digits, seed=5)
    assert np.array_equal(S.sample(p, cfg, 4, cond=digits, seed=5, guide=(pu, cfg_u), guidance=1.0), plain)
    g = S.sample(p, cfg, 4, cond=digits, seed=5, guide=(pu, cfg_u), guidance=2.0, top_k=1)
    assert np.array_equal(g, S.sample(p, cfg, 4, cond=digits, seed=5, guide=(pu, cfg_u), guidance=2.0, top_k=1,
                                      use_cache=False))
    seq_c = np.concatenate([to_numpy(cfg.prefix(digits))[:, None], g], axis=1)
    seq_u = np.concatenate([to_numpy(cfg_u.prefix(None, n=4))[:, None], g], axis=1)
    lc = to_numpy(G.forward_logits(p, cfg, asarray(seq_c[:, :-1]))[0])
    lu = to_numpy(G.forward_logits(pu, cfg_u, asarray(seq_u[:, :-1]))[0])
    assert np.array_equal((lu + 2.0 * (lc - lu)).argmax(-1), g)
    assert not np.array_equal(g, S.sample(p, cfg, 4, cond=digits, seed=5, top_k=1))
    with pytest.raises(ValueError, match="unconditional prior"):
        S.sample(p, cfg, 4, cond=digits, guide=(p, cfg), guidance=2.0)


@pytest.mark.parametrize("field, value", [("n_head", 0), ("d_model", 0), ("n_layer", -1), ("context", 0),
                                          ("n_code", 2.5), ("mlp_ratio", True)])
def test_config_refuses_sizes_that_are_not_positive_whole_numbers(field, value):
    # n_head=0 used to surface as ZeroDivisionError from `d_model % n_head`
    with pytest.raises(ValueError, match=f"GPTConfig.{field} must be a whole number >= 1"):
        G.GPTConfig(**{field: value})


# ----------------------------------------------------------------------------- null class, prior as classifier
def _null_cfg(**kw):
    return G.GPTConfig(**{**TINY, **kw}, null_class=True)


def test_null_class_layout_and_old_configs():
    cfg = _null_cfg()
    assert cfg.null_token == cfg.start_token == 13 + 10 and cfg.vocab_size == G.GPTConfig(**TINY).vocab_size
    assert cfg.class_every  # the default for dedicated class tokens: the null row is added everywhere too
    old = {k: v for k, v in G.GPTConfig(**TINY).to_dict().items() if k != "null_class"}  # a shipped prior's record
    assert G.GPTConfig.from_dict(old).null_class is False
    with pytest.raises(ValueError, match="no null class"):
        G.GPTConfig(**TINY).null_token
    for bad in (dict(cond="none"), dict(class_token="shared")):
        with pytest.raises(ValueError, match="null_class needs"):
            G.GPTConfig(**TINY, null_class=True, **{**bad, "class_every": False})


@pytest.mark.parametrize("every", [True, False])
def test_null_class_gradcheck(backend, every):
    """float64 finite differences through the null-class path: a batch mixing digit prefixes and
    the null token, with class_every on (the null row is added at every position) and off."""
    cfg = _null_cfg(class_every=every)
    p = _params64(cfg)
    seq = _seq(cfg, 3)
    seq[1, 0] = cfg.null_token
    seq = asarray(seq)
    loss, cache = G.forward(p, cfg, seq)
    grads = G.backward(cache)
    worst = max(rel_error(grads[k], numerical_gradient(lambda: G.forward(p, cfg, seq)[0], p[k]))
                for k in ("wte", "wpe", "h0.attn.w_qkv", "h1.mlp.w_fc", "head.w"))
    assert worst < 1e-6, worst
    assert float(abs(grads["wte"][cfg.null_token]).max()) > 1e-6  # the null row learns


def test_class_log_likelihood_matches_the_loss(backend):
    """log p(grid | c) for every class equals minus the summed token loss of forward() on the
    sequence with prefix c, for every grid and class (batches of 2 over 5 grids)."""
    cfg = G.GPTConfig(**{**TINY, "context": 6, "n_class": 4})
    p = _params64(cfg, std=0.5)
    grids = np.random.default_rng(3).integers(0, cfg.n_code, (5, 2, 3))  # (N, h, w)
    ll = G.class_log_likelihood(p, cfg, grids, batch_size=2)
    assert ll.shape == (5, 4) and ll.dtype == np.float64
    for c in range(4):
        seq = G.make_sequences(grids, [c] * 5, cfg)
        for n in range(5):
            loss, _ = G.forward(p, cfg, asarray(seq[n:n + 1]))
            assert abs(ll[n, c] + loss * cfg.context) < 1e-9
    assert np.abs(ll - ll[:, :1]).max() > 1e-3  # the classes do differ
    with pytest.raises(ValueError, match="class-conditional"):
        G.class_log_likelihood(p, G.GPTConfig(**{**TINY, "cond": "none"}), grids)


def test_prior_as_classifier_reads_the_likelihoods(backend, monkeypatch):
    """Accuracy, margin and the MI bound computed from a known table of log-likelihoods."""
    from minivq import evaluate as E
    table = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]))  # (N, 3)
    monkeypatch.setattr(E, "class_log_likelihood", lambda params, cfg, tokens, bs: table)
    digits = np.array([0, 1, 1, 2])
    r = E.prior_as_classifier(({}, G.GPTConfig(**{**TINY, "n_class": 3})), np.zeros((4, 2, 3), int), digits)
    assert r["accuracy"] == 0.75 and r["per_digit"] == [1.0, 0.5, 1.0]
    post = np.exp(table) / np.exp(table).sum(1, keepdims=True)
    ce = -np.log2(post[np.arange(4), digits]).mean()
    h = -(np.array([1, 2, 1]) / 4 * np.log2(np.array([1, 2, 1]) / 4)).sum()
    assert abs(r["cross_entropy_bits"] - ce) < 1e-12 and abs(r["h_class_bits"] - h) < 1e-12
    assert abs(r["mi_bits_lower_bound"] - (h - ce)) < 1e-12
    margin = np.log2([0.7 / 0.2, 0.6 / 0.3, 0.3 / 0.5, 0.6 / 0.2]).mean()
    assert abs(r["mean_margin_bits"] - margin) < 1e-12
    with pytest.raises(ValueError, match="digits"):
        E.prior_as_classifier(({}, G.GPTConfig(**TINY)), np.zeros((4, 2, 3), int), digits[:3])


def test_guidance_from_the_null_class_of_one_model(backend):
    """With no guide, a prior with a null class guides itself: greedy guided decoding takes
    argmax(l_null + s (l_c - l_null)) of the same model's full forwards; the batched (2n) cached
    and the uncached paths agree; s = 1 is plain sampling; a prior without a null class ignores s."""
    cfg = _null_cfg(context=9)
    p = _params64(cfg, std=0.5)
    digits = [0, 3, 3, 9]
    plain = S.sample(p, cfg, 4, cond=digits, seed=5, temperature=0.9)
    assert np.array_equal(S.sample(p, cfg, 4, cond=digits, seed=5, temperature=0.9, guidance=1.0), plain)
    g = S.sample(p, cfg, 4, cond=digits, seed=5, guidance=2.5, top_k=1)
    assert np.array_equal(g, S.sample(p, cfg, 4, cond=digits, seed=5, guidance=2.5, top_k=1, use_cache=False))
    seq_c = np.concatenate([to_numpy(cfg.prefix(digits))[:, None], g], axis=1)
    seq_u = seq_c.copy()
    seq_u[:, 0] = cfg.null_token
    lc = to_numpy(G.forward_logits(p, cfg, asarray(seq_c[:, :-1]))[0])
    lu = to_numpy(G.forward_logits(p, cfg, asarray(seq_u[:, :-1]))[0])
    assert np.array_equal((lu + 2.5 * (lc - lu)).argmax(-1), g)
    assert not np.array_equal(g, S.sample(p, cfg, 4, cond=digits, seed=5, top_k=1))
    t = S.sample(p, cfg, 4, cond=digits, seed=5, guidance=2.5, temperature=0.9)  # sampled, not greedy
    assert np.array_equal(t, S.sample(p, cfg, 4, cond=digits, seed=5, guidance=2.5, temperature=0.9, use_cache=False))
    no_null = G.GPTConfig(**{**TINY, "context": 9})
    assert np.array_equal(S.sample(p, no_null, 4, cond=digits, seed=5, guidance=2.5),
                          S.sample(p, no_null, 4, cond=digits, seed=5))


# ----------------------------------------------------------------------------- speaker condition
SPK = ("ann", "bob", "cy")


def _spk_cfg(**kw):
    return G.GPTConfig(**{**TINY, "context": 7, **kw}, speakers=SPK)


@pytest.mark.parametrize("every,null", [(True, False), (False, False), (True, True)])
def test_speaker_gradcheck(backend, every, null):
    """Every parameter's gradient (wse included) against centred differences, float64, with the
    speaker row added at every position, with and without class_every, and with the null class."""
    cfg = _spk_cfg(class_every=every, null_class=null)
    p = _params64(cfg)
    assert p["wse"].shape == (3, cfg.d_model)
    seq = _seq(cfg, 3)
    if null:
        seq[1, 0] = cfg.null_token
    seq, spk = asarray(seq), asarray(np.array([2, 0, 2]))  # speaker 1 in no sequence
    loss, cache = G.forward(p, cfg, seq, speaker=spk)
    grads = G.backward(cache)
    assert set(grads) == set(p) and all(grads[k].shape == p[k].shape for k in p)
    assert float(abs(grads["wse"][1]).max()) == 0.0 and float(abs(grads["wse"][2]).min()) > 0
    names = list(p) if (every, null) == (True, False) else ["wse", "wte", "wpe", "h0.attn.w_qkv"]
    errs = {k: rel_error(grads[k], numerical_gradient(lambda: G.forward(p, cfg, seq, speaker=spk)[0], p[k]))
            for k in names}
    assert max(errs.values()) < 1e-6, errs


def test_speaker_reaches_every_position_and_other_params_are_unchanged(backend):
    cfg = _spk_cfg()
    p = _params64(cfg, std=0.5)
    idx = asarray(_seq(cfg, 2)[:, :-1])
    a = to_numpy(G.forward_logits(p, cfg, idx, speaker=asarray(np.array([0, 1])))[0])
    b = to_numpy(G.forward_logits(p, cfg, idx, speaker=asarray(np.array([2, 1])))[0])
    assert np.abs(a[0] - b[0]).min() > 1e-9 and np.abs(a[1] - b[1]).max() == 0.0  # only sequence 0 changed voice
    plain = G.GPTConfig(**{**TINY, "context": 7})
    q, r = G.init_params(plain, seed=4), G.init_params(cfg, seed=4)
    assert set(r) - set(q) == {"wse"}  # drawn last: every other parameter is what it was without speakers
    assert all(np.array_equal(to_numpy(q[k]), to_numpy(r[k])) for k in q)
    assert "wse" in G.no_decay_names(r)


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.7, top_k=5)])
def test_speaker_cached_sampling_matches_the_full_forward(backend, kw):
    """The KV-cache decoder adds the speaker row at every step as forward_logits does: cached and
    uncached sampling draw the same codes, and forward_step's logits equal the full forward's."""
    cfg = _spk_cfg(context=9)
    p = _params64(cfg, std=0.5)
    digits, voices = [0, 3, 3, 9], ["cy", "ann", "bob", "cy"]
    a = S.sample(p, cfg, 4, cond=digits, speaker=voices, seed=5, use_cache=True, **kw)
    b = S.sample(p, cfg, 4, cond=digits, speaker=[2, 0, 1, 2], seed=5, use_cache=False, **kw)
    assert a.shape == (4, 9) and np.array_equal(a, b)
    c = S.sample(p, cfg, 4, cond=digits, speaker="ann", seed=5, **kw)
    assert not np.array_equal(a, c)  # another voice, other codes
    seq = asarray(np.concatenate([to_numpy(cfg.prefix(digits))[:, None], a], axis=1))
    spk = asarray(np.array([2, 0, 1, 2]))
    full = to_numpy(G.forward_logits(p, cfg, seq[:, :-1], speaker=spk)[0])  # (4, 9, K)
    caches = S.new_caches(cfg, 4, dtype="float64")
    step = np.stack([to_numpy(S.forward_step(p, cfg, seq[:, t], caches, spk)) for t in range(9)], axis=1)
    assert rel_error(step, full) < 1e-12  # the same sums in another order: float64 round-off only


def test_speaker_guided_sampling_keeps_the_voice(backend):
    """Self-guidance (null class) on a speaker prior: the null rows carry the same speaker, so a
    guidance of 1 + 0 * anything equals the plain conditional draw, and s != 1 changes it."""
    cfg = _spk_cfg(context=8, null_class=True)
    p = _params64(cfg, std=0.5)
    kw = dict(cond=[1, 2], speaker=["bob", "ann"], seed=3)
    assert np.array_equal(S.sample(p, cfg, 2, guidance=1.0, **kw), S.sample(p, cfg, 2, **kw))
    assert not np.array_equal(S.sample(p, cfg, 2, guidance=3.0, **kw), S.sample(p, cfg, 2, **kw))


def test_speaker_errors_and_config_records():
    cfg = _spk_cfg()
    p = G.init_params(cfg)
    with pytest.raises(ValueError, match=r"unknown speaker 'zed'; this prior knows ann, bob, cy"):
        S.sample(p, cfg, 2, cond=1, speaker="zed")
    with pytest.raises(ValueError, match="conditioned on the speaker; pass one of ann, bob, cy"):
        S.sample(p, cfg, 2, cond=1)
    with pytest.raises(ValueError, match=r"speaker ids must lie in 0\.\.2"):
        G.forward(p, cfg, _seq(cfg, 2), speaker=np.array([0, 3]))
    plain = G.GPTConfig(**{**TINY, "context": 7})
    with pytest.raises(ValueError, match="no speaker condition"):
        S.sample(G.init_params(plain), plain, 2, cond=1, speaker="ann")
    with pytest.raises(ValueError, match="repeated"):
        G.GPTConfig(speakers=("a", "a"))
    with pytest.raises(ValueError, match="non-empty names"):
        G.GPTConfig(speakers="ann")
    assert G.GPTConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["speakers"] == list(SPK)
    assert "speakers" not in plain.to_dict()  # a prior without speakers keeps its old record
    assert G.GPTConfig.from_dict(plain.to_dict()).speakers == ()
    assert to_numpy(cfg.speaker_ids(["cy", "ann"])).tolist() == [2, 0]


# ----------------------------------------------------------------------------- class_norm (adaptive LayerNorm)
def _norm_cfg(**kw):
    return G.GPTConfig(**{**TINY, "n_class": 4, **kw}, class_norm=True)


def _norm_seq(cfg, digits, null_rows=()):
    """Sequences with the given digits (and the null token as prefix in null_rows)."""
    codes = np.random.default_rng(0).integers(0, cfg.n_code, (len(digits), cfg.context))
    seq = np.concatenate([to_numpy(cfg.prefix(digits))[:, None], codes], axis=1)  # (B, 1 + T)
    for r in null_rows:
        seq[r, 0] = cfg.null_token
    return seq


@pytest.mark.parametrize("every,null", [(False, False), (True, True)])
def test_class_norm_gradcheck(backend, every, null):
    """Every parameter's gradient, the class tables of all nine LayerNorms included, against
    centred differences in float64: a batch with a repeated digit, a digit used by no sequence
    (its table rows get exactly zero gradient) and, with the null class, a null-prefix row."""
    cfg = _norm_cfg(class_every=every, null_class=null)
    p = _params64(cfg)
    assert p["h1.ln2.cg"].shape == (cfg.n_class + 1, cfg.d_model) and "ln_f.cb" in p
    seq = asarray(_norm_seq(cfg, [2, 0, 2, 1], null_rows=(1,) if null else ()))  # digit 3 in no sequence
    loss, cache = G.forward(p, cfg, seq)
    grads = G.backward(cache)
    assert set(grads) == set(p) and all(grads[k].shape == p[k].shape for k in p)
    for k in ("h0.ln1.cg", "h1.ln2.cb", "ln_f.cg"):
        g = to_numpy(grads[k])
        assert np.abs(g[3]).max() == 0.0 and np.abs(g[2]).min() > 0  # unused digit: zero; used twice: not
        assert (np.abs(g[cfg.n_class]).max() > 0) == null  # the null class's row learns only from null prefixes
    errs = {k: rel_error(grads[k], numerical_gradient(lambda: G.forward(p, cfg, seq)[0], p[k])) for k in p}
    assert max(errs.values()) < 1e-6, errs


def test_class_norm_block_gradcheck(backend):
    """One block with per-sequence LayerNorm gains and biases, through check_layer (input too)."""
    cfg = _norm_cfg()
    bp = G.block_params(_params64(cfg), 0)
    assert set(G.CLASS_NORM_KEYS) <= set(bp)
    names = list(bp)
    x = asarray(np.random.default_rng(1).standard_normal((3, 5, cfg.d_model)))
    cls = asarray(np.array([1, 4, 1]))  # row 4 = the null class
    errs = check_layer(lambda x_, *w: G.block_forward(x_, dict(zip(names, w)), cfg.n_head, cls=cls),
                       lambda d, c: (lambda dx, g: [dx] + [g[k] for k in names])(*G.block_backward(d, c)),
                       {"x": x, **{k.replace(".", "_"): v for k, v in bp.items()}})
    assert max(errs.values()) < 1e-6, errs


def test_class_norm_starts_as_the_plain_model_and_then_reaches_every_layer(backend):
    """Zero tables (the initial state): the same logits as the prior without class_norm, and the
    same initial values for every shared parameter. Non-zero tables: the digit changes the logits
    at every position even without class_every (attention to the prefix alone could not be
    switched off; here the block's LayerNorm alone carries it: one layer, causal, position 0 the prefix)."""
    cfg = _norm_cfg(class_every=False, n_layer=1)
    plain = G.GPTConfig(**{**TINY, "n_class": 4, "n_layer": 1}, class_every=False)
    q, r = G.init_params(plain, seed=4), G.init_params(cfg, seed=4)
    assert set(r) - set(q) == {"h0.ln1.cg", "h0.ln1.cb", "h0.ln2.cg", "h0.ln2.cb", "ln_f.cg", "ln_f.cb"}
    assert all(np.array_equal(to_numpy(q[k]), to_numpy(r[k])) for k in q)
    assert all(float(abs(r[k]).max()) == 0.0 for k in set(r) - set(q))
    idx = asarray(_norm_seq(cfg, [0, 3])[:, :-1])
    assert np.array_equal(to_numpy(G.forward_logits(r, cfg, idx)[0]), to_numpy(G.forward_logits(q, plain, idx)[0]))
    p = _params64(cfg, std=0.5)
    for k in set(p) - set(q):  # only the class tables differ between the two runs below
        p[k] = asarray(np.zeros(p[k].shape))
    p["h0.ln2.cb"][3] = 0.5  # digit 3 shifts the MLP's LayerNorm output, nothing else
    a = to_numpy(G.forward_logits(p, cfg, idx)[0])  # (2, T, K)
    idx_other = to_numpy(idx).copy()
    idx_other[1, 0] = to_numpy(cfg.prefix([2]))[0]  # sequence 1 asks for digit 2 instead of 3
    b = to_numpy(G.forward_logits(p, cfg, asarray(idx_other))[0])
    assert np.abs(a[0] - b[0]).max() == 0.0  # sequence 0 (digit 0) is untouched
    assert np.abs(a[1] - b[1]).max(axis=-1).min() > 1e-6  # every position of sequence 1 changed
    assert {"ln_f.cg", "h0.ln1.cb"} <= set(G.no_decay_names(p))


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.7, top_k=5)])
def test_class_norm_cached_sampling_matches_the_full_forward(backend, kw):
    """The KV-cache decoder keeps the prefix's class row for every later step: cached and uncached
    sampling draw the same codes, forward_step's logits equal the full forward's, and
    self-guidance (null class in the same batch) runs through it."""
    cfg = _norm_cfg(context=9, null_class=True)
    p = _params64(cfg, std=0.5)
    a = S.sample(p, cfg, 4, cond=[0, 3, 3, 1], seed=5, use_cache=True, **kw)
    b = S.sample(p, cfg, 4, cond=[0, 3, 3, 1], seed=5, use_cache=False, **kw)
    assert a.shape == (4, 9) and np.array_equal(a, b)
    seq = asarray(np.concatenate([to_numpy(cfg.prefix([0, 3, 3, 1]))[:, None], a], axis=1))
    seq[2, 0] = cfg.null_token
    full = to_numpy(G.forward_logits(p, cfg, seq[:, :-1])[0])  # (4, 9, K)
    caches = S.new_caches(cfg, 4, dtype="float64")
    step = np.stack([to_numpy(S.forward_step(p, cfg, seq[:, t], caches)) for t in range(9)], axis=1)
    assert rel_error(step, full) < 1e-12  # the same sums in another order: float64 round-off only
    assert not np.array_equal(S.sample(p, cfg, 4, cond=[0, 3, 3, 1], seed=5, guidance=3.0, **kw), a)


def test_class_norm_config_and_records():
    cfg = _norm_cfg()
    assert G.GPTConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["class_norm"] is True
    plain = G.GPTConfig(**TINY)
    assert "class_norm" not in plain.to_dict()  # a prior without class_norm keeps its old record
    assert G.GPTConfig.from_dict(plain.to_dict()).class_norm is False
    for bad in (dict(cond="none"), dict(class_token="shared")):
        with pytest.raises(ValueError, match="class_norm needs"):
            G.GPTConfig(**TINY, class_norm=True, class_every=False, **bad)
