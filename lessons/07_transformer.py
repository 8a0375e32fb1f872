"""Lesson 07: a decoder-only transformer is the prior over VQ-VAE tokens.

    python lessons/07_transformer.py [--quick] [--out out/lesson07] [--tokens PATH] [--steps N]
                                     [--no-class-every] [--class-norm] [--temperature T]

Each 16 x 16 grid of VQ-VAE codes (token row = a band of 4 mel bins, column = 4 frames) is read
band by band (the lowest band across all frames, then the next band up, ...) into 256 codes
z_0..z_255, after one prefix token: the digit's class token (conditional prior P(z | digit)) or a
start token (unconditional P(z)). The transformer predicts each code from everything before it:

    P(z | d) = prod_t P(z_t | d, z_<t)       loss = mean_t -log2 P(z_t | d, z_<t)  bits per token
    x_t = wte[token_t] + wpe[t] (+ wte[class_d] at every position: class_every)
    block:  x = x + Attn(LN1(x));  x = x + W2 GELU(W1 LN2(x))   (pre-LayerNorm, as in GPT-2)
    logits = LN_f(x) W_head + b_head   over the K codes
    class_norm (optional): every LN's gain and bias also get the digit's row of two learned tables,
        LN_d(x) = (g + cg[d]) * xhat + (b + cb[d]),   xhat = (x - mean) / std over the C features
    so the digit scales and shifts the features inside every block, not only at the input.

The lesson writes one block and the whole forward in NumPy and checks them against
minivq.transformer, then uses the SHIPPED priors (minivq/pretrained/prior_class.npz and
prior_none.npz, trained for minutes) on the real test tokens of FSDD's official split:
bits per token with and without the digit, bits per grid position, attention maps, and samples
decoded to spectrograms by the shipped VQ-VAE. A brief training run of a small prior on the same
tokens shows the loss falling from log2 K. No dataset is needed: the token grids ship with the
package (minivq/pretrained/tokens.npz); --tokens takes another tokens.npz (e.g. the VQ-VAE
trainer's), for which the lesson trains its own priors briefly, since the shipped ones were
trained on the shipped VQ-VAE's codes.

Try this
  --no-class-every  feed the conditional prior without the class vector added at every position
                    (the shipped prior was trained with it). Its bits rise, the WRONG digit stops
                    costing anything and its digit guesses fall to chance: the model learned to read
                    the digit from its own input at every position, not by attending to position 0.
  --temperature T   sample at T = 0.5 or 1.5: the samples' own bits per token (printed) fall or rise
                    against the real tokens', and the spectrograms turn smooth and repetitive or noisy.
  --class-norm      train the brief prior (section 6) with class_norm as well, and compare its test
                    bits with a run without the flag (same steps, same seed).
  --steps 600       train the small prior longer and watch how slowly it closes the gap to the
                    shipped prior's bits (a bigger model, trained for the steps printed at the top).
  In attention_maps.png, find the heads with a bright diagonal 15 positions left of the main one:
  they read the code one band down in the same frames (section 4 prints how strongly).
"""
import argparse
import dataclasses
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import minivq  # noqa: E402
from minivq import backend, checkpoint, evaluate  # noqa: E402
from minivq import train_prior as TP  # noqa: E402  (this lesson trains, briefly)
from minivq import transformer as TR  # noqa: E402
from minivq import vqvae as V  # noqa: E402
from minivq.gradcheck import check_layer  # noqa: E402
from minivq.sampling import sample  # noqa: E402

PRETRAINED = Path(minivq.__file__).resolve().parent / "pretrained"
TOKENS = PRETRAINED / "tokens.npz"  # the shipped VQ-VAE's token grids of FSDD's official split
PRIOR_CLASS, PRIOR_NONE = PRETRAINED / "prior_class.npz", PRETRAINED / "prior_none.npz"  # the shipped priors
VQVAE = PRETRAINED / "vqvae.npz"  # the shipped VQ-VAE (CR=16) that made the tokens
QUICK_TEST_PER_DIGIT = 5   # test grids per digit evaluated with --quick (the full run uses all 300)
CLASSIFY_PER_DIGIT = 3     # test grids per digit scored under all 10 class tokens (--quick: 1)
N_ATTN = 8                 # test sequences averaged for the attention statistics
TEMPERATURE = 1.0          # sampling temperature (1 = the prior as learned; the bundle's generate uses 0.7)
SAMPLE_SEED = 0
TRAIN = dict(d_model=64, n_layer=2, n_head=4, steps=300, batch=32, lr=3e-3)  # the brief training run
QUICK_TRAIN = dict(d_model=32, n_layer=2, n_head=2, steps=45, batch=8, lr=3e-3)
EVAL_POINTS = 3            # test evaluations during the brief run (one per epoch of its subset)
SEED = 0


# ----------------------------------------------------------------------------- the model, written out
def layernorm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):  # the tanh approximation GPT-2 uses
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(x, p, H):
    """Causal multi-head self-attention (lesson 06 writes out its forward and backward)."""
    B, T, C = x.shape
    qkv = x @ p["w_qkv"] + p["b_qkv"]  # (B, T, 3C)
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, H, C // H).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(C // H)  # (B, H, T, T)
    s = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, s)  # causal mask
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)  # (B, H, T, T) softmax over keys
    y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, T, C) heads side by side
    return y @ p["w_proj"] + p["b_proj"]


def norm(x, P, name, cls=None):
    """LayerNorm `name` (h0.ln1, ..., ln_f). cls (B,) class rows (class_norm): sequence b's gain and
    bias are the shared ones plus row cls[b] of the tables name.cg, name.cb."""
    if cls is None:
        return layernorm(x, P[name + ".g"], P[name + ".b"])
    g = P[name + ".g"] + P[name + ".cg"][cls]  # (B, C) one gain per sequence
    b = P[name + ".b"] + P[name + ".cb"][cls]
    return layernorm(x, g[:, None], b[:, None])  # broadcast over the T positions


def block(x, P, l, H, cls=None):
    """Transformer block l: x (B, T, C) -> (B, T, C)."""
    w = lambda name: P[f"h{l}.{name}"]  # noqa: E731
    attn = {k: w("attn." + k) for k in ("w_qkv", "b_qkv", "w_proj", "b_proj")}
    x = x + attention(norm(x, P, f"h{l}.ln1", cls), attn, H)  # residual 1
    h = norm(x, P, f"h{l}.ln2", cls)
    return x + gelu(h @ w("mlp.w_fc") + w("mlp.b_fc")) @ w("mlp.w_proj") + w("mlp.b_proj")  # residual 2


def embed(idx, P, class_every):
    """idx (B, T) token ids -> x (B, T, C) = wte[token] + wpe[t] (+ wte[class token] everywhere)."""
    x = P["wte"][idx] + P["wpe"][:idx.shape[1]]
    if class_every:
        x = x + P["wte"][idx[:, :1]]  # (B, 1, C) broadcast over positions
    return x


def logits_inline(idx, P, cfg):
    x = embed(idx, P, cfg.class_every)
    cls = idx[:, 0] - cfg.n_code if cfg.class_norm else None  # class token K + d -> table row d
    for l in range(cfg.n_layer):
        x = block(x, P, l, cfg.n_head, cls)
    return norm(x, P, "ln_f", cls) @ P["head.w"] + P["head.b"]  # (B, T, K)


# ----------------------------------------------------------------------------- helpers
def load_data(args):
    path = Path(args.tokens) if args.tokens else TOKENS
    if not path.is_file():
        sys.exit(f"error: no token grids at {path}.\n"
                 + ("  Check the path passed with --tokens." if args.tokens else
                    "  The package should ship minivq/pretrained/tokens.npz. Without it, make token grids with\n"
                    "    python -m minivq.train vqvae --data $MINIVQ_FSDD --out out/vqvae\n"
                    "  (it writes out/vqvae/tokens.npz) and pass --tokens out/vqvae/tokens.npz."))
    return TP.load_tokens(path), path


def balanced(digits, per_digit):
    """Indices of per_digit grids of each digit, spread evenly over that digit's grids (speakers)."""
    out = []
    for d in range(10):
        ix = np.flatnonzero(digits == d)
        out.append(ix[np.linspace(0, len(ix) - 1, min(per_digit, len(ix))).astype(int)] if len(ix) else ix)
    return np.concatenate(out)


def nll_bits(params, cfg, tokens, digits, batch=50):
    """-log2 P(z_t | prefix, z_<t) of every code of every grid under a prior -> (N, T) on the host."""
    seq = TR.make_sequences(tokens, digits, cfg)  # (N, 1 + T) host
    out = []
    for i in range(0, len(seq), batch):
        idx, targets = TR.split_sequence(backend.asarray(seq[i:i + batch]))
        logits, _ = TR.forward_logits(params, cfg, idx)  # (b, T, K)
        out.append(backend.to_numpy(TR.token_nll(logits, targets)) / TR.NATS_PER_BIT)
    return np.concatenate(out)  # (N, T) bits


def entropy_bits(codes):
    """Empirical entropy (bits) of the values in a 1-D array."""
    _, n = np.unique(codes, return_counts=True)
    f = n / n.sum()
    return float(-(f * np.log2(f)).sum())


def uniform_share(queries):
    """The weight causal attention spread evenly over the past gives one key, averaged over the
    query positions t (query t sees t + 1 keys)."""
    return float(np.mean(1.0 / (np.asarray(queries) + 1)))


def train_brief(data, cond, s, class_every, out, class_norm=False):
    """Train a small prior for about s['steps'] steps with minivq.train_prior -> (params, cfg, summary)."""
    per_epoch = max(1, s["steps"] // EVAL_POINTS)
    cfg = TR.GPTConfig(cond=cond, d_model=s["d_model"], n_layer=s["n_layer"], n_head=s["n_head"],
                       class_every=class_every if cond == "class" else False, class_norm=class_norm and cond == "class")
    tcfg = TP.TrainConfig(epochs=EVAL_POINTS, batch_size=s["batch"], lr=s["lr"], min_lr=s["lr"] / 10,
                          warmup=max(1, s["steps"] // 10), seed=SEED, max_train=per_epoch * s["batch"],
                          log_every=30.0)
    summary = TP.train(data, out, cfg, tcfg, verbose=False)
    params, cfg, _ = TR.load_prior(out / TP.CKPT_NAME)
    return params, cfg, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer test grids, a shorter training run")
    ap.add_argument("--out", default="out/lesson07", help="output folder")
    ap.add_argument("--tokens", default=None, help=f"another tokens.npz (default: the shipped {TOKENS.name})")
    ap.add_argument("--vqvae", default=None, help="the vqvae.npz that made --tokens, to decode samples "
                                                  "(default: vqvae.npz beside the tokens file)")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"steps of the brief training run (0: skip; default {TRAIN['steps']}, "
                         f"--quick {QUICK_TRAIN['steps']})")
    ap.add_argument("--no-class-every", action="store_true", help="condition on the class token at position 0 only")
    ap.add_argument("--class-norm", action="store_true",
                    help="train the brief conditional prior with class_norm (every LayerNorm per digit)")
    ap.add_argument("--temperature", type=float, default=TEMPERATURE, help="sampling temperature (> 0)")
    args = ap.parse_args()
    if args.temperature <= 0:
        ap.error("--temperature must be > 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = dict(QUICK_TRAIN if args.quick else TRAIN)
    s["steps"] = s["steps"] if args.steps is None else max(0, args.steps)
    if s["steps"]:  # a whole number of epochs, one test evaluation after each
        s["steps"] = max(1, s["steps"] // EVAL_POINTS) * EVAL_POINTS

    # ---- data: token grids of the official split
    data, tok_path = load_data(args)
    print(__doc__[__doc__.index("Each 16 x 16"):__doc__.index("The lesson writes")].rstrip() + "\n")
    shipped = tok_path.resolve() == TOKENS.resolve()
    if args.quick:  # a balanced subset of the test grids keeps the evaluation short
        keep = balanced(data["test_digit"], QUICK_TEST_PER_DIGIT)
        data = {**data, "test_tokens": data["test_tokens"][keep], "test_digit": data["test_digit"][keep]}
    test_tok, test_dig = data["test_tokens"], data["test_digit"]
    rows, cols = test_tok.shape[1:]
    K, T = data["K"], rows * cols
    print(f"backend: {backend.device()}; tokens: {tok_path}" + (" (shipped)" if shipped else ""))
    print(f"   {len(data['train_tokens'])} train / {len(test_tok)} test grids of {rows}x{cols} codes, K={K}; a "
          f"sequence is 1 prefix + {T} codes; a uniform guess costs log2 K = {math.log2(K):.2f} bits per code")

    # ---- the priors: shipped, or trained here on other tokens
    brief = None
    if shipped:
        pc, cc, meta_c = TR.load_prior(PRIOR_CLASS)
        pu, cu, meta_u = TR.load_prior(PRIOR_NONE)
        print(f"priors: the shipped {PRIOR_CLASS.name} and {PRIOR_NONE.name} (d={cc.d_model}, {cc.n_layer} "
              f"layers, {cc.n_head} heads, {TR.n_params(pc):,} params each; trained {meta_c['step']} and "
              f"{meta_u['step']} steps)")
    else:
        if s["steps"] < 1:
            sys.exit("error: with --tokens the lesson trains its own priors: pass --steps >= 1")
        print(f"priors: the shipped priors fit the codes of the shipped VQ-VAE only, and {tok_path} is not the "
              f"shipped token file; training a small conditional and unconditional prior on these tokens "
              f"({s['steps']} steps each, d={s['d_model']})")
        pc, cc, brief = train_brief(data, "class", s, not args.no_class_every, out / "prior_class", args.class_norm)
        pu, cu, _ = train_brief(data, "none", s, False, out / "prior_none")
        meta_c = meta_u = None
    if args.no_class_every and cc.class_every:
        cc = dataclasses.replace(cc, class_every=False)
        print("   --no-class-every: the conditional prior now gets the class token at position 0 only")

    # ---- 1. one block and the whole forward, written out, against the library
    print(f"\n1. the model written out in NumPy (float64) vs minivq.transformer (float32, {backend.device()})")
    P = {k: backend.to_numpy(v).astype(np.float64) for k, v in pc.items()}
    idx = TR.make_sequences(test_tok[:2], test_dig[:2], cc)[:, :-1]  # (2, 256): prefix + z_0..z_254
    x0 = embed(idx, P, cc.class_every)  # (2, 256, C)
    y_ours = block(x0, P, 0, cc.n_head)
    y_lib, _ = TR.block_forward(backend.asarray(x0, dtype="float32"), TR.block_params(pc, 0), cc.n_head)
    print(f"   block 0 (LN -> attention -> residual -> LN -> MLP(GELU) -> residual): max |ours - block_forward| = "
          f"{np.abs(y_ours - backend.to_numpy(y_lib)).max():.1e} (values up to {np.abs(y_ours).max():.1f})")
    lg_ours = logits_inline(idx, P, cc)
    lg_lib, _ = TR.forward_logits(pc, cc, backend.asarray(idx))
    print(f"   embedding{' + class every position' if cc.class_every else ''}, {cc.n_layer} blocks, LN_f, head: "
          f"max |ours - forward_logits| = {np.abs(lg_ours - backend.to_numpy(lg_lib)).max():.1e} "
          f"(logits up to {np.abs(lg_ours).max():.1f}; float32 round-off)")
    # the backward: lesson 06 writes out the attention part; the library's block_backward is
    # checked here against finite differences on a tiny float64 block with random weights
    rng = backend.rng(SEED)
    Cs, Hs = 8, 2
    tiny = TR.init_params(TR.GPTConfig(cond="none", n_code=4, context=5, d_model=Cs, n_layer=1, n_head=Hs))
    bp = {k: backend.asarray(backend.to_numpy(tiny["h0." + k]).astype(np.float64)
                             + 0.3 * rng.standard_normal(tiny["h0." + k].shape)) for k in TR.BLOCK_KEYS}
    errs = check_layer(lambda x_, *w: TR.block_forward(x_, dict(zip(TR.BLOCK_KEYS, w)), Hs),
                       lambda d, c: (lambda dx, g: [dx] + [g[k] for k in TR.BLOCK_KEYS])(*TR.block_backward(d, c)),
                       {"x": backend.asarray(rng.standard_normal((1, 5, Cs))), **bp})
    worst = max(errs.values())
    print(f"   block_backward vs finite differences (B=1, T=5, C={Cs}, float64): worst relative error {worst:.1e} "
          f"over dx and {len(bp)} parameter arrays ({'OK' if worst < 1e-6 else 'FAIL'})")
    # class_norm: the same block with per-sequence LayerNorm gains and biases (a tiny random model:
    # the shipped prior does not use it), written out above in norm(); forward and backward checked
    ncfg = TR.GPTConfig(n_code=4, n_class=3, context=5, d_model=Cs, n_layer=1, n_head=Hs, class_norm=True)
    tn = {k: backend.to_numpy(v).astype(np.float64) + 0.3 * rng.standard_normal(v.shape)
          for k, v in TR.init_params(ncfg).items()}
    nidx = np.array([[4 + 2, 1, 0, 3, 2], [4 + 0, 3, 3, 1, 0]])  # (2, 5): class tokens K + d of digits 2 and 0
    gap = np.abs(logits_inline(nidx, tn, ncfg)
                 - backend.to_numpy(TR.forward_logits({k: backend.asarray(v) for k, v in tn.items()}, ncfg,
                                                      backend.asarray(nidx))[0])).max()
    names = list(TR.block_params(tn, 0))  # BLOCK_KEYS and the four class tables of ln1, ln2
    cls = backend.asarray(nidx[:, 0] - ncfg.n_code)  # (2,) table rows of the two sequences' digits
    errs = check_layer(lambda x_, *w: TR.block_forward(x_, dict(zip(names, w)), Hs, cls=cls),
                       lambda d, c: (lambda dx, g: [dx] + [g[k] for k in names])(*TR.block_backward(d, c)),
                       {"x": backend.asarray(rng.standard_normal((2, 5, Cs))),
                        **{k: backend.asarray(tn["h0." + k]) for k in names}})
    worst = max(errs.values())
    print(f"   class_norm (tiny random model): max |ours - forward_logits| = {gap:.1e}; block_backward with per-digit "
          f"LayerNorms vs finite differences: worst {worst:.1e} ({'OK' if worst < 1e-6 and gap < 1e-9 else 'FAIL'})")

    # ---- 2. conditional vs unconditional on the test tokens
    print(f"\n2. bits per code token on {len(test_tok)} test grids{' (a balanced subset)' if args.quick else ''}")
    nb_c = nll_bits(pc, cc, test_tok, test_dig)  # (N, T)
    nb_u = nll_bits(pu, cu, test_tok, test_dig)
    nb_w = nll_bits(pc, cc, test_tok, (test_dig + 1) % 10)
    b_c, b_u, b_w = nb_c.mean(), nb_u.mean(), nb_w.mean()
    print(f"   conditional   P(z | digit)       : {b_c:.3f} bits"
          + ("  (class at position 0 only: --no-class-every)" if args.no_class_every else ""))
    print(f"   unconditional P(z)               : {b_u:.3f} bits")
    print(f"   conditional, told the WRONG digit: {b_w:.3f} bits (digit + 1 mod 10)")
    print(f"   knowing the digit lowers the loss: {'yes' if b_c < b_u else 'NO'} ({b_u - b_c:+.3f} bits per code, "
          f"{(b_u - b_c) * T:+.1f} bits per grid); the wrong digit costs {b_w - b_c:+.3f} bits per code")
    if (b_u - b_c) * T > math.log2(10):
        print(f"   a perfect pair of models would differ by at most log2 10 = {math.log2(10):.2f} bits per grid "
              "(all the label can tell); real ones differ by more: the unconditional prior has to work the word out "
              "from the codes so far")
    if meta_c is not None and meta_u is not None:
        early = [h for h in meta_c["history"] if h["step"] <= meta_u["step"]]
        if early and meta_u["history"]:
            e, u = early[-1]["test_bits"], meta_u["history"][-1]["test_bits"]
            print(f"   the unconditional prior trained {meta_u['step']} steps, the conditional {meta_c['step']}; at "
                  f"step {early[-1]['step']} the conditional one's own log reads {e:.3f} bits on the full test set, "
                  f"{'below' if e < u else 'NOT below'} the unconditional one's final {u:.3f}")
    pick = balanced(test_dig, 1 if args.quick else CLASSIFY_PER_DIGIT)
    grid_bits = np.stack([nll_bits(pc, cc, test_tok[pick], np.full(len(pick), d)).sum(1) for d in range(10)], 1)
    acc = float((grid_bits.argmin(1) == test_dig[pick]).mean())
    print(f"   the conditional prior as a classifier, argmax_d P(z | d) over the 10 class tokens: {acc:.0%} of "
          f"{len(pick)} test grids (chance 10%)")
    # the same question in bits: how much does a grid tell about its digit under this prior?
    # Bayes with a uniform prior over the digits: p(d | z) = 2^-bits(z | d) / sum_d' 2^-bits(z | d')
    truth, present = test_dig[pick], np.unique(test_dig[pick])
    lb = -grid_bits[:, present]  # (n, P) log2 P(z | d)
    log2_post = lb - lb.max(1, keepdims=True)
    log2_post = log2_post - np.log2(np.exp2(log2_post).sum(1, keepdims=True))  # (n, P) log2 p(d | z)
    ce = float(-log2_post[np.arange(len(pick)), np.searchsorted(present, truth)].mean())
    h_c = entropy_bits(truth)  # log2 10 for a balanced pick
    others = np.where(np.arange(10)[None] == truth[:, None], np.inf, grid_bits)  # (n, 10) true digit masked
    margin = float((others.min(1) - grid_bits[np.arange(len(pick)), truth]).mean())
    print(f"   I(digit; grid) >= H(C) - E[-log2 p(d_true | z)] = {h_c:.2f} - {ce:.2f} = {h_c - ce:.2f} bits per grid "
          f"(at most log2 10 = {math.log2(10):.2f}); a lower bound because the cross-entropy of any posterior, this "
          f"prior's included, is >= the true H(C | z). The true digit wins by {margin:.1f} bits of log-likelihood "
          "on average")
    lib = evaluate.prior_as_classifier((pc, cc), test_tok[pick], truth)  # the library's version, tested
    err = max(abs(lib["accuracy"] - acc), abs(lib["mi_bits_lower_bound"] - (h_c - ce)),
              abs(lib["mean_margin_bits"] - margin))
    print(f"   evaluate.prior_as_classifier on the same grids: accuracy {lib['accuracy']:.0%}, bound "
          f"{lib['mi_bits_lower_bound']:.2f} bits, margin {lib['mean_margin_bits']:.1f} bits "
          f"(largest |ours - library| {err:.1e}: float32 logits) {'OK' if err < 1e-2 else 'FAIL'}")

    # ---- 3. which positions are hard
    print("\n3. bits per position (the grid is read band by band, lowest mel band first)")
    pp_c, pp_u = nb_c.mean(0), nb_u.mean(0)  # (T,)
    seq_train = cc.to_sequence(data["train_tokens"])  # (N_train, T) codes in reading order
    marg = np.array([entropy_bits(seq_train[:, t]) for t in range(T)])  # (T,) entropy of the code at t
    top0 = np.unique(seq_train[:, 0], return_counts=True)
    code0, share0 = int(top0[0][top0[1].argmax()]), top0[1].max() / len(seq_train)
    rank0 = int((pp_c < pp_c[0]).sum()) + 1
    print(f"   the first code z_0, with only the prefix before it: {pp_c[0]:.2f} bits (conditional), {pp_u[0]:.2f} "
          f"(unconditional); {rank0 - 1} of the other {T - 1} positions are cheaper; they average "
          f"{pp_c[1:].mean():.2f} and {pp_u[1:].mean():.2f}")
    print(f"   z_0 is the lowest token row (the lowest mel bands) at the first column (the first frames), where the "
          f"clips are nearly always silent: code {code0} fills it in {share0:.1%} of the training grids; the empirical "
          f"entropy there is {marg[0]:.2f} bits against {marg[1:].mean():.2f} on average over the other positions")
    print(f"   across positions, the prior's bits follow that empirical entropy: correlation "
          f"{np.corrcoef(pp_c, marg)[0, 1]:.2f}; the hard positions are the cells where speech varies")
    hardest = np.sort(pp_c)[::-1]
    quiet = pp_c < 0.5
    print(f"   the hardest quarter of the positions carries {hardest[:T // 4].sum() / hardest.sum():.0%} of the "
          f"bits; {quiet.sum()} positions cost under 0.5 bits (the silent edges of the grid)")
    if quiet.any() and (~quiet).any():
        print(f"   knowing the digit saves {(pp_u - pp_c)[quiet].mean():+.3f} bits per code on those, "
              f"{(pp_u - pp_c)[~quiet].mean():+.3f} on the rest")

    # ---- the VQ-VAE, to see what the codes and the samples sound like
    vq_path = VQVAE if shipped else Path(args.vqvae) if args.vqvae else tok_path.parent / "vqvae.npz"
    vq = V.load_vqvae(vq_path) if vq_path.is_file() else None
    if vq is not None:
        log_floor = checkpoint.load(vq_path)["config"].get("features", {}).get("log_floor")
        real_ix = balanced(test_dig, 1)
        real_mel = V.decode_logmel(*vq, test_tok[real_ix])  # (10, M, frames) raw log-mel
        ph, pw = real_mel.shape[1] // rows, real_mel.shape[2] // cols  # mel bins and frames per token
        if log_floor:
            print(f"   decoded, the code at z_0 gives a {ph}x{pw} patch of mean log-mel "
                  f"{real_mel[:, :ph, :pw].mean():.2f}: the log floor log({log_floor:g}) = {math.log(log_floor):.2f}, "
                  f"i.e. silence (the clips are centred in zero padding; the median cell is {np.median(real_mel):.2f})")
    else:
        print(f"   (no {vq_path} to decode the codes with: pass --vqvae)")

    # ---- 4. attention of the conditional prior
    print(f"\n4. attention maps of the conditional prior on {N_ATTN} test sequences")
    seq = TR.make_sequences(test_tok[:: max(1, len(test_tok) // N_ATTN)][:N_ATTN],
                            test_dig[:: max(1, len(test_tok) // N_ATTN)][:N_ATTN], cc)
    _, cache = TR.forward_logits(pc, cc, backend.asarray(seq[:, :-1]))
    maps = [backend.to_numpy(m).mean(0) for m in TR.attention_maps(cache)]  # each (H, T, T) mean over sequences
    L, H = len(maps), maps[0].shape[0]
    q_all = np.arange(1, T)  # queries after the prefix
    below = cols - 1  # key offset of the same frame one band down: query t predicts z_t, key t - 15 holds z_(t-16)
    q_below = np.arange(below + 1, T)
    print("   query position t reads prefix, z_0..z_(t-1) and predicts z_t; key 0 = the class token, key t = z_(t-1) "
          f"(same band, previous frames), key t-{below} = z_(t-{cols}) (same frames, one band down)")
    print(f"   weight if spread evenly over the past (mean over queries of 1/(t+1)): class token "
          f"{uniform_share(q_all):.3f}, key t {uniform_share(q_all):.3f}, key t-{below} {uniform_share(q_below):.3f}")
    for l in range(L):
        on_cls = maps[l][:, 1:, 0].mean(-1)  # (H,)
        on_prev = maps[l][:, q_all, q_all].mean(-1)
        on_below = maps[l][:, q_below, q_below - below].mean(-1)
        fmt = lambda v: " ".join(f"{x:.3f}" for x in v)  # noqa: E731
        print(f"   layer {l}, heads 0-{H - 1}: class token {fmt(on_cls)} | key t {fmt(on_prev)} | key t-{below} "
              f"{fmt(on_below)}")
    best = max(((l, h) for l in range(L) for h in range(H)),
               key=lambda lh: maps[lh[0]][lh[1], q_below, q_below - below].mean())
    print(f"   the strongest 'one band down' head, layer {best[0]} head {best[1]}, gives that key "
          f"{maps[best[0]][best[1], q_below, q_below - below].mean() / uniform_share(q_below):.0f}x the even share; "
          f"the class token gets {np.mean([m[:, 1:, 0].mean() for m in maps]):.3f} on average against the even "
          f"{uniform_share(q_all):.3f}" + (": with class_every the digit already sits in every position's input"
                                          if cc.class_every and np.mean([m[:, 1:, 0].mean() for m in maps])
                                          < uniform_share(q_all) else ""))
    fig, ax = plt.subplots(L, H, figsize=(3.1 * H + 1.2, 3.0 * L + 0.6), squeeze=False, constrained_layout=True)
    norm = PowerNorm(gamma=0.4, vmin=0, vmax=1)  # compresses the large weights so small ones show
    for l in range(L):
        for h in range(H):
            im = ax[l, h].imshow(maps[l][h], cmap="viridis", norm=norm, interpolation="nearest")
            ax[l, h].set_title(f"layer {l} head {h}", fontsize=9)
            ax[l, h].set_xticks([0, T // 2] if l == L - 1 else [])
            ax[l, h].set_yticks([0, T // 2] if h == 0 else [])
        ax[l, 0].set_ylabel("query position", fontsize=8)
    for h in range(H):
        ax[L - 1, h].set_xlabel("key position", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.6, label="attention weight (power-law colour scale)")
    fig.suptitle(f"conditional prior: attention (mean of {N_ATTN} test sequences); key 0 = class token")
    fig.savefig(out / "attention_maps.png", dpi=90)
    plt.close(fig)

    # ---- 5. samples
    print(f"\n5. samples at temperature {args.temperature:g} (one per digit, and unconditional)")
    sc = sample(pc, cc, 10, cond=np.arange(10), temperature=args.temperature, seed=SAMPLE_SEED)  # (10, T)
    su = sample(pu, cu, 10, temperature=args.temperature, seed=SAMPLE_SEED)
    g_c, g_u = cc.to_grid(sc, rows, cols), cu.to_grid(su, rows, cols)  # (10, rows, cols)
    own_c = nll_bits(pc, cc, g_c, np.arange(10)).mean()
    print(f"   the samples' own bits per code under the conditional prior: {own_c:.2f}; the real test grids': "
          f"{b_c:.2f} (at temperature 1 the first estimates the prior's own entropy, which is close to the second "
          "when its samples vary as much as real data; lower temperatures give likelier, plainer grids)")
    mode = np.array([np.bincount(seq_train[:, t], minlength=K).argmax() for t in range(T)])  # (T,) commonest code
    print(f"   share of positions holding that position's commonest training code (the silent edges): real test grids "
          f"{(cc.to_sequence(test_tok) == mode).mean():.0%}, conditional samples {(sc == mode).mean():.0%}, "
          f"unconditional samples {(su == mode).mean():.0%}")
    if vq is not None:
        mel_c, mel_u = V.decode_logmel(*vq, g_c), V.decode_logmel(*vq, g_u)  # (10, M, frames)
        lo, hi = np.percentile(real_mel, [1, 99.5])
        fig, ax = plt.subplots(3, 10, figsize=(20, 6.6), constrained_layout=True)
        for r, (mels, name) in enumerate(((real_mel, "real test tokens"), (mel_c, "sample | digit"),
                                          (mel_u, "unconditional sample"))):
            for d in range(10):
                im = ax[r, d].imshow(mels[d], origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
                ax[r, d].set_title(f"{name} {d}" if r < 2 else name, fontsize=8)
                ax[r, d].set_xticks([0, 32] if r == 2 else [])
                ax[r, d].set_yticks([0, 32] if d == 0 else [])
        for d in range(10):
            ax[2, d].set_xlabel("frame", fontsize=8)
        for r in range(3):
            ax[r, 0].set_ylabel("mel band", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7, label="log-mel")
        fig.suptitle(f"decoded by the VQ-VAE: real test tokens (top), conditional samples (middle), unconditional "
                     f"samples (bottom); temperature {args.temperature:g}")
        fig.savefig(out / "samples.png", dpi=90)
        plt.close(fig)
        print("   samples.png: look for what the real rows have: silence either side, a voiced stretch with "
              "harmonics (stripes) at the bottom, noise (s, f, x) higher up")

    # ---- 6. a brief training run of a small prior on the same tokens
    if shipped and s["steps"] > 0:
        print(f"\n6. training a small conditional prior (d={s['d_model']}, {s['n_layer']} layers) for "
              f"{s['steps']} steps with minivq.train_prior")
        _, _, brief = train_brief(data, "class", s, not args.no_class_every, out / "brief", args.class_norm)
    elif brief is not None:
        print("\n6. the brief training of the conditional prior above")
    if brief is not None:
        sl = np.asarray(brief["step_loss"]) / TR.NATS_PER_BIT
        n10 = max(1, len(sl) // 10)
        print(f"   train loss: {sl[:n10].mean():.2f} bits over the first {n10} steps -> {sl[-n10:].mean():.2f} over "
              f"the last {n10}; test {brief['test_bits']:.2f} bits (uniform guess {math.log2(K):.2f}; the "
              f"{'shipped ' if shipped else ''}conditional prior of section 2: {b_c:.2f})")
    fig, ax = plt.subplots(2, 2, figsize=(13, 8.5), constrained_layout=True)
    ax[0, 0].plot(pp_c, lw=0.8, label=f"conditional ({b_c:.2f} bits mean)")
    ax[0, 0].plot(pp_u, lw=0.8, label=f"unconditional ({b_u:.2f})")
    ax[0, 0].plot(marg, ":", lw=0.8, c="k", label="entropy of the code at t (train grids)")
    ax[0, 0].set_xlabel("position t in the sequence (band by band)")
    ax[0, 0].set_ylabel("bits")
    ax[0, 0].set_title("test bits per position")
    ax[0, 0].legend(fontsize=8)
    if brief is not None:
        ax[0, 1].plot(np.arange(1, len(sl) + 1), sl, lw=0.8, label="train (per step)")
        ax[0, 1].plot([h["step"] for h in brief["history"]], [h["test_bits"] for h in brief["history"]], "o-",
                      label="test")
        ax[0, 1].axhline(math.log2(K), ls=":", c="k", label="uniform guess")
        ax[0, 1].axhline(b_c, ls="--", c="g", label="conditional prior of section 2")
        ax[0, 1].set_xlabel("step")
        ax[0, 1].set_ylabel("bits per code")
        ax[0, 1].set_title(f"brief training of a small prior (d={s['d_model']})")
        ax[0, 1].legend(fontsize=8)
    else:
        ax[0, 1].axis("off")
    im = ax[1, 0].imshow(cc.to_grid(pp_c[None], rows, cols)[0], origin="lower", cmap="magma", aspect="auto")
    ax[1, 0].set_title("conditional prior: test bits per grid cell")
    fig.colorbar(im, ax=ax[1, 0], label="bits")
    gain = cc.to_grid((pp_u - pp_c)[None], rows, cols)[0]
    m = np.abs(gain).max()
    im = ax[1, 1].imshow(gain, origin="lower", cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto")
    ax[1, 1].set_title("bits saved by knowing the digit (unconditional - conditional)")
    fig.colorbar(im, ax=ax[1, 1], label="bits")
    for a_ in (ax[1, 0], ax[1, 1]):
        a_.set_xlabel("token column (time)")
        a_.set_ylabel("token row (mel bands, low to high)")
    fig.savefig(out / "bits.png", dpi=90)
    plt.close(fig)

    print("\nWhat to notice" + ("" if shipped else " (in well-trained priors such as the shipped ones; check the "
                                                  "numbers above before trusting these with briefly trained ones)"))
    print("  - the digit pays off inside the word, hardly in the silence around it (section 3; bits.png, bottom "
          "right).")
    print("  - the strongest attention is local in the grid: one band down in the same frames (section 4).")
    print("  - half the bits sit in a quarter of the positions, the voiced middle of the grid: a prior's loss is "
          "dominated by the speech, not the padding.")
    print("\n" + __doc__[__doc__.index("Try this"):].rstrip())
    wrote = ["bits.png", "attention_maps.png"] + (["samples.png"] if vq is not None else []) \
        + ([f"{d}/ (prior.npz, metrics.json)" for d in (("brief",) if shipped else ("prior_class", "prior_none"))]
           if brief is not None else [])
    print("\nwrote " + ", ".join(str(out / w) for w in wrote))


if __name__ == "__main__":
    main()
