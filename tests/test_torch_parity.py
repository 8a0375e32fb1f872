"""Forward and backward equal PyTorch's (optional: skipped when torch is not installed).

Layers: float32 to 1e-5 relative (norm-based), float64 to 1e-10.
Whole models, float64, to 1e-8: the VQ-VAE (CR=4 and 16, codebook loss or EMA) and the GPT
prior (dedicated class tokens with and without class_every, with the null class, the shared
class token, the unconditional prior; dropout; cached decoding; one clipped AdamW step) against the PyTorch
models in benchmarks/torch_models.py, the same ones the benchmarks time.
"""

import numpy as np
import pytest

from minivq import conv
from minivq import layers as L
from minivq import sampling as S
from minivq import transformer as G
from minivq import vqvae as V
from minivq.backend import asarray, to_numpy
from minivq.gradcheck import rel_error
from minivq.optim import adam_step, clip_grad_norm

from fakes import load_benchmark

torch = pytest.importorskip("torch", reason="PyTorch is not installed (parity tests are optional)")
F = torch.nn.functional


def _load_torch_models():
    """benchmarks/torch_models.py, loaded by path (benchmarks/ is not a package)."""
    return load_benchmark("torch_models")


TM = _load_torch_models()
MODEL_TOL = 1e-8  # whole models in float64: ~1e-15 is typical; a real mismatch is >> 1e-8

DTYPES = [(np.float32, 1e-5), (np.float64, 1e-10)]


def _pair(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    return asarray(a), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, tol):
    assert rel_error(to_numpy(ours), theirs.detach().numpy()) < tol


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("case", [(3, 2, 9, 7, 5, 4, 2, 1), (2, 3, 8, 8, 4, 3, 1, 1), (2, 4, 6, 5, 3, 1, 1, 0),
                                  (4, 1, 16, 12, 8, 4, 2, 1)])  # (B, C, H, W, F, K, stride, pad)
def test_conv2d_matches_torch(backend, case, dtype, tol):
    B, C, H, W, Fo, K, s, p = case
    rng = np.random.default_rng(0)
    x, tx = _pair(rng, (B, C, H, W), dtype)
    w, tw = _pair(rng, (Fo, C, K, K), dtype)
    b, tb = _pair(rng, (Fo,), dtype)
    out, cache = conv.conv2d_forward(x, w, b, stride=s, pad=p)
    tout = F.conv2d(tx, tw, tb, stride=s, padding=p)
    _close(out, tout, tol)
    d, td = _pair(rng, tuple(out.shape), dtype)
    dx, dw, db = conv.conv2d_backward(d, cache)
    tout.backward(td)
    for g, t in ((dx, tx), (dw, tw), (db, tb)):
        _close(g, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("case", [(3, 2, 9, 7, 5, 4, 2, 1), (2, 3, 8, 8, 4, 3, 1, 1), (2, 4, 5, 6, 1, 4, 2, 1),
                                  (2, 3, 5, 5, 2, 3, 2, 0)])  # (B, C, H, W, F, K, stride, pad)
def test_conv_transpose2d_matches_torch(backend, case, dtype, tol):
    B, C, H, W, Fo, K, s, p = case
    rng = np.random.default_rng(1)
    x, tx = _pair(rng, (B, C, H, W), dtype)
    w, tw = _pair(rng, (C, Fo, K, K), dtype)
    b, tb = _pair(rng, (Fo,), dtype)
    out, cache = conv.conv_transpose2d_forward(x, w, b, stride=s, pad=p)
    tout = F.conv_transpose2d(tx, tw, tb, stride=s, padding=p)
    _close(out, tout, tol)
    d, td = _pair(rng, tuple(out.shape), dtype)
    dx, dw, db = conv.conv_transpose2d_backward(d, cache)
    tout.backward(td)
    for g, t in ((dx, tx), (dw, tw), (db, tb)):
        _close(g, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_layernorm_matches_torch(backend, dtype, tol):
    rng = np.random.default_rng(2)
    x, tx = _pair(rng, (3, 5, 33), dtype)
    g, tg = _pair(rng, (33,), dtype)
    b, tb = _pair(rng, (33,), dtype)
    out, cache = L.layernorm_forward(x, g, b)
    tout = F.layer_norm(tx, (33,), tg, tb, eps=1e-5)
    _close(out, tout, tol)
    d, td = _pair(rng, (3, 5, 33), dtype)
    grads = L.layernorm_backward(d, cache)
    tout.backward(td)
    for ours, t in zip(grads, (tx, tg, tb)):
        _close(ours, t.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_gelu_tanh_matches_torch(backend, dtype, tol):
    rng = np.random.default_rng(3)
    x, tx = _pair(rng, (4, 7, 9), dtype)
    out, cache = L.gelu_forward(x)
    tout = F.gelu(tx, approximate="tanh")
    _close(out, tout, tol)
    d, td = _pair(rng, (4, 7, 9), dtype)
    tout.backward(td)
    _close(L.gelu_backward(d, cache), tx.grad, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_matches_torch(backend, dtype, tol, masked):
    rng = np.random.default_rng(4)
    logits, tl = _pair(rng, (3, 6, 11), dtype)
    tl.data *= 3
    logits = asarray(tl.detach().numpy().copy())
    t = rng.integers(0, 11, (3, 6))
    m = rng.random((3, 6)) < 0.5 if masked else np.ones((3, 6), bool)
    loss, dlogits = L.softmax_cross_entropy(logits, asarray(t), asarray(m) if masked else None)
    tt = torch.tensor(np.where(m, t, -100))  # torch: ignore_index marks masked positions
    tloss = F.cross_entropy(tl.reshape(-1, 11), tt.reshape(-1), ignore_index=-100)
    assert abs(float(loss) - tloss.item()) <= tol * abs(tloss.item())
    tloss.backward()
    _close(dlogits, tl.grad, tol)


# ----------------------------------------------------------------------------- whole VQ-VAE
def _vqvae_case(cr, ema):
    """A small VQ-VAE with odd sizes (latent grid 9x9 at CR=4, 5x5 at CR=16), float64 params,
    a codebook drawn from its own encoder outputs (so most codes are chosen), and a batch x."""
    cfg = V.VQVAEConfig(cr=cr, in_size={4: 18, 16: 20}[cr], ch1=5, hidden=7, res_hidden=3, n_res=2,
                        D=5, K=11, beta=0.3, ema=ema)
    g = np.random.default_rng(cr)
    params = V.init_params(cfg, seed=cr, dtype="float64")
    x = asarray(g.standard_normal((3, 1, cfg.in_size, cfg.in_size)))  # (B, 1, H, W)
    z_e, _ = V.encoder_forward(params, x, cfg)  # (B, D, h, w)
    zv = to_numpy(z_e).transpose(0, 2, 3, 1).reshape(-1, cfg.D)  # (N, D)
    params["codebook"] = asarray(zv[g.choice(len(zv), cfg.K, replace=False)] + 0.01 * g.standard_normal((cfg.K, cfg.D)))
    return cfg, params, x


@pytest.mark.parametrize("ema", [False, True], ids=["codebook-loss", "ema"])
@pytest.mark.parametrize("cr", [4, 16])
def test_vqvae_matches_torch(backend, cr, ema):
    cfg, params, x = _vqvae_case(cr, ema)
    loss, parts, cache = V.forward(params, x, cfg)
    grads = V.backward(cache)
    tp = TM.to_torch(params)
    tloss, tparts, tidx = TM.vqvae_forward(tp, cfg, torch.tensor(to_numpy(x)))
    tloss.backward()
    idx = to_numpy(cache["idx"])  # (B, h, w)
    assert idx.shape == (3, cfg.grid, cfg.grid)
    assert np.array_equal(idx, tidx.numpy())
    assert len(np.unique(idx)) >= cfg.K // 2  # many codes in play, so the codebook gradient is not trivial
    assert rel_error(float(loss), tloss.item()) < MODEL_TOL
    for k in ("recon", "codebook", "commit"):
        assert rel_error(parts[k], tparts[k].item()) < MODEL_TOL, k
    assert (parts["codebook"] == 0.0) == ema  # EMA: no codebook loss, and (below) no codebook gradient
    errs = TM.grad_errors(grads, tp)
    assert set(errs) == set(params)
    worst = max(errs, key=errs.get)
    print(f"VQ-VAE CR={cr} ema={ema}: loss rel {rel_error(float(loss), tloss.item()):.1e}, "
          f"worst grad rel error {errs[worst]:.1e} ({worst})")
    assert errs[worst] < MODEL_TOL, f"{worst}: {errs[worst]:.2e}"
    assert bool(np.all(to_numpy(grads["codebook"]) == 0)) == ema


# ----------------------------------------------------------------------------- whole GPT prior
ROWS, COLS = 3, 5  # a 3 x 5 grid of codes: sequences of 15 codes after the prefix
GPT_CASES = {  # name: (GPTConfig fields, class_every the config must resolve to)
    "class-dedicated-every": ({"cond": "class", "class_token": "dedicated", "order": "time"}, True),
    "class-dedicated-plain": ({"cond": "class", "class_token": "dedicated", "class_every": False}, False),
    "class-shared": ({"cond": "class", "class_token": "shared"}, False),
    "unconditional": ({"cond": "none", "order": "time"}, False),
    # classifier-free guidance in one model: the middle sequence has the null class as its prefix,
    # and with class_every the null row is what is added at every position
    "class-null-every": ({"cond": "class", "null_class": True}, True),
    # class_norm: every LayerNorm's gain and bias per class (adaLN), alone and with the null class
    "class-norm-plain": ({"cond": "class", "class_norm": True, "class_every": False}, False),
    "class-null-norm-every": ({"cond": "class", "class_norm": True, "null_class": True, "order": "time"}, True),
}


def _gpt_case(name, dropout=0.0, B=3):
    """GPTConfig for the case (K=13, 7 classes, T=15, C=15, H=3 of width 5, 2 layers, MLP 3C), float64
    params with every entry moved off its initial value (LayerNorm gains off 1, biases off 0,
    weights large enough for uneven attention), and B sequences built from code grids and
    digits both ways: by the config (minivq) and by torch_models.gpt_sequence."""
    fields, every = GPT_CASES[name]
    cfg = G.GPTConfig(n_code=13, n_class=7, context=ROWS * COLS, d_model=15, n_layer=2, n_head=3, mlp_ratio=3,
                      dropout=dropout, **fields)
    assert cfg.class_every is every
    g = np.random.default_rng(7)
    params = {k: asarray(to_numpy(v).astype(np.float64) + 0.3 * g.standard_normal(v.shape))
              for k, v in G.init_params(cfg, seed=3).items()}
    grids = g.integers(0, cfg.n_code, (B, ROWS, COLS))  # (B, rows, cols)
    digits = None if cfg.cond == "none" else g.integers(0, cfg.n_class, B)  # (B,)
    seq = np.concatenate([to_numpy(cfg.prefix(digits, n=B))[:, None], to_numpy(cfg.to_sequence(grids))], axis=1)
    null = None
    if cfg.null_class:
        null = np.arange(B) == 1  # (B,)
        seq[null, 0] = cfg.null_token
    tseq = TM.gpt_sequence(cfg, torch.tensor(grids), None if digits is None else torch.tensor(digits),
                           None if null is None else torch.tensor(null))
    assert np.array_equal(seq, tseq.numpy())  # prefix token ids and code order agree
    return cfg, params, seq, tseq


def _gpt_agrees(label, params, cfg, tseq, loss, cache, grads, **kw):
    """The torch model's loss, logits and every gradient agree with ours to MODEL_TOL -> (torch
    params, torch logits) for further checks."""
    tp = TM.to_torch(params)
    tloss, tlogits = TM.gpt_loss(tp, cfg, tseq, **kw)
    tloss.backward()
    lerr, gerr = rel_error(loss, tloss.item()), rel_error(cache["logits"], tlogits.detach().numpy())
    errs = TM.grad_errors(grads, tp)
    assert set(errs) == set(params)
    worst = max(errs, key=errs.get)
    print(f"{label}: loss rel {lerr:.1e}, logits rel {gerr:.1e}, worst grad rel error {errs[worst]:.1e} ({worst})")
    assert lerr < MODEL_TOL and gerr < MODEL_TOL
    assert errs[worst] < MODEL_TOL, f"{worst}: {errs[worst]:.2e}"
    return tp, tlogits


@pytest.mark.parametrize("name", list(GPT_CASES))
def test_gpt_matches_torch(backend, name):
    cfg, params, seq, tseq = _gpt_case(name)
    if name == "unconditional":  # fewer positions than the context: wpe rows past T get no gradient
        seq, tseq = seq[:, :-4], tseq[:, :-4]
    loss, cache = G.forward(params, cfg, asarray(seq))
    grads = G.backward(cache)
    _gpt_agrees(f"GPT {name}", params, cfg, tseq, loss, cache, grads)


def test_gpt_dropout_matches_torch(backend):
    """Dropout masks from one seed on both sides: checks where dropout sits and how it scales."""
    cfg, params, seq, tseq = _gpt_case("class-dedicated-every", dropout=0.25)
    loss, cache = G.forward(params, cfg, asarray(seq), rng=np.random.default_rng(11))
    grads = G.backward(cache)
    tp = TM.to_torch(params)
    tloss, _ = TM.gpt_loss(tp, cfg, tseq, rng=np.random.default_rng(11))
    tloss.backward()
    assert abs(loss - G.forward(params, cfg, asarray(seq))[0]) > 1e-3  # dropout changed the loss
    lerr, errs = rel_error(loss, tloss.item()), TM.grad_errors(grads, tp)
    worst = max(errs, key=errs.get)
    print(f"GPT dropout: loss rel {lerr:.1e}, worst grad rel error {errs[worst]:.1e} ({worst})")
    assert lerr < MODEL_TOL
    assert errs[worst] < MODEL_TOL, f"{worst}: {errs[worst]:.2e}"


@pytest.mark.parametrize("name", list(GPT_CASES))
def test_gpt_cached_decoding_matches_torch(backend, name):
    """sampling.forward_step, one token at a time with the KV cache, gives torch's logits."""
    cfg, params, seq, tseq = _gpt_case(name)
    caches = S.new_caches(cfg, seq.shape[0], dtype="float64")
    s = asarray(seq)
    logits = np.stack([to_numpy(S.forward_step(params, cfg, s[:, t], caches))  # (B, K) per step
                       for t in range(cfg.context)], axis=1)  # (B, T, K)
    tlogits = TM.gpt_logits(TM.to_torch(params), cfg, tseq[:, :-1]).detach().numpy()  # (B, T, K)
    err = rel_error(logits, tlogits)
    print(f"GPT {name} cached decoding: logits rel error {err:.1e}")
    assert err < MODEL_TOL


@pytest.mark.parametrize("name", ["class-dedicated-every", "class-null-every", "class-dedicated-plain"])
def test_gpt_with_speakers_matches_torch(backend, name):
    """A digit+speaker prior (four speakers, wse added at every position): loss, logits and
    every gradient (wse included), cached decoding, and one clipped AdamW step (wse undecayed)."""
    fields, _ = GPT_CASES[name]
    cfg = G.GPTConfig(n_code=13, n_class=7, context=ROWS * COLS, d_model=15, n_layer=2, n_head=3, mlp_ratio=3,
                      speakers=("ann", "bob", "cy", "dee"), **fields)
    g = np.random.default_rng(5)
    params = {k: asarray(to_numpy(v).astype(np.float64) + 0.3 * g.standard_normal(v.shape))
              for k, v in G.init_params(cfg, seed=3).items()}
    B = 4
    grids, digits = g.integers(0, cfg.n_code, (B, ROWS, COLS)), g.integers(0, cfg.n_class, B)  # (B, rows, cols), (B,)
    spk = np.array([2, 0, 3, 2])  # (B,) a repeated speaker and one never used (its wse row gets no gradient)
    null = torch.tensor(np.arange(B) == 1) if cfg.null_class else None
    tseq = TM.gpt_sequence(cfg, torch.tensor(grids), torch.tensor(digits), null)  # (B, T+1)
    seq = asarray(tseq.numpy())
    loss, cache = G.forward(params, cfg, seq, speaker=asarray(spk))
    grads = G.backward(cache)
    assert "wse" in grads and float(abs(grads["wse"][1]).max()) == 0.0  # speaker 1 is in no sequence
    tp, tlogits = _gpt_agrees(f"GPT {name} + speakers", params, cfg, tseq, loss, cache, grads,
                              speaker=torch.tensor(spk))
    caches = S.new_caches(cfg, B, dtype="float64")
    logits = np.stack([to_numpy(S.forward_step(params, cfg, seq[:, t], caches, asarray(spk)))
                       for t in range(cfg.context)], axis=1)  # (B, T, K)
    assert rel_error(logits, tlogits.detach().numpy()) < MODEL_TOL
    nd = G.no_decay_names(params)
    assert "wse" in nd
    g_, _ = clip_grad_norm(grads, 0.5)
    adam_step(params, g_, {}, 1e-2, weight_decay=0.1, no_decay=nd)
    topt = TM.adamw(tp, nd, 1e-2, 0.1)
    TM.clip_grad_norm_(list(tp.values()), 0.5)
    topt.step()
    step_err = max(rel_error(params[k], tp[k].detach().numpy()) for k in params)
    assert step_err < MODEL_TOL, step_err


def test_gpt_clipped_adamw_steps_match_torch(backend):
    """Two steps of clip-by-global-norm + AdamW (weight decay off for no_decay names), each side
    from its own gradients: the params after them agree (the moments carry over, the clip is
    active, bias correction runs at steps 1 and 2)."""
    cfg, params, seq, tseq = _gpt_case("class-dedicated-every")
    lr, wd, clip = 1e-2, 0.1, 0.5
    nd = G.no_decay_names(params)
    tp = TM.to_torch(params)
    opt, topt = {}, TM.adamw(tp, nd, lr, wd)
    for _ in range(2):
        _, cache = G.forward(params, cfg, asarray(seq))
        grads, norm = clip_grad_norm(G.backward(cache), clip)
        assert norm > clip  # the clip is active
        adam_step(params, grads, opt, lr, weight_decay=wd, no_decay=nd)
        topt.zero_grad(set_to_none=True)
        TM.gpt_loss(tp, cfg, tseq)[0].backward()
        TM.clip_grad_norm_(list(tp.values()), clip)
        topt.step()
    errs = {k: rel_error(params[k], tp[k].detach().numpy()) for k in params}
    worst = max(errs, key=errs.get)
    print(f"GPT two clipped AdamW steps: worst param rel error {errs[worst]:.1e} ({worst})")
    assert errs[worst] < MODEL_TOL, f"{worst}: {errs[worst]:.2e}"


# ----------------------------------------------------------------------------- the listener (second judge)
@pytest.mark.parametrize("strides", [(2, 2, 2), (1, 2, 2)])
def test_listener_matches_torch(backend, strides):
    """Whole listener in float64: clips of three lengths padded into one batch, odd sizes
    (C0 = 7, kernel 5, 5/6/4 channels, 9 hidden units, 10 classes), biases moved off zero so the
    max-pool picks a unique frame."""
    from minivq import listener as Li
    cfg = Li.ListenerConfig(n_ceps=7, deltas=False, channels=(5, 6, 4), kernel=5, strides=strides, hidden=9)
    params = Li.init_params(cfg, seed=3, dtype="float64")
    g = np.random.default_rng(4)
    params = {k: backend.asarray(to_numpy(v) + (0.1 + 0.2 * g.random(v.shape) if k.endswith("_b") else 0),
                                 dtype="float64") for k, v in params.items()}
    lengths = np.array([23, 9, 16])
    x = g.standard_normal((3, 7, 1, 23)) * (np.arange(23) < lengths[:, None])[:, None, None, :]  # (B, C0, 1, T)
    y = np.array([3, 0, 9])
    loss, logits, cache = Li.forward(params, backend.asarray(x, dtype="float64"), lengths, y, strides=strides)
    grads = Li.backward(cache)
    tp = TM.to_torch(params)
    tloss, tlogits = TM.listener_loss(tp, torch.tensor(x[:, :, 0, :]), lengths, y, strides)
    tloss.backward()
    assert rel_error(to_numpy(logits), tlogits.detach().numpy()) < MODEL_TOL
    assert rel_error(float(loss), tloss.item()) < MODEL_TOL
    errs = TM.grad_errors(grads, tp)
    worst = max(errs, key=errs.get)
    assert errs[worst] < MODEL_TOL, f"{worst}: {errs[worst]:.2e}"
