"""PyTorch reference models for minivq: the one copy used by the benchmarks in this folder
(torch_reference.py, torch_reference_gpt.py) and by tests/test_torch_parity.py.

torch is optional: minivq/ never imports it; only this folder and that test do.

Each model is a plain function of a dict of torch tensors named like minivq's params, built
from torch's own layers (F.conv2d, F.conv_transpose2d, F.scaled_dot_product_attention,
F.layer_norm, F.gelu, F.cross_entropy, ...). Autograd, not our hand-written backward, gives
the reference gradients; what must agree is spelled out once here, next to the model:

  VQ-VAE  (minivq.vqvae)   loss = mean (x_hat - x)^2 + [mean (sg(z_e) - e)^2 if not ema]
                                  + beta mean (z_e - sg(e))^2,   z_q = z_e + sg(e - z_e)
  GPT     (minivq.transformer)
          input      x_t = wte[token_t] + wpe[t] (+ wte[token_0] at every t with class_every)
                     (+ wse[speaker] at every t for a prior with speakers)
          class_norm every LayerNorm's gain and bias plus the row of its (n_class + 1, C) tables
                     cg, cb for the sequence's class (digit d: row d; null class: row n_class)
          prefix     class_token="dedicated": K + d; "shared": d; cond="none": start K + n_class;
                     null_class: the null class ("no digit") is the start token K + n_class
          codes      the (rows, cols) grid read row after row ("freq") or column after column ("time")
          blocks     pre-LayerNorm, causal attention, tanh-GELU MLP, dropout on the embedding
                     and on both residual branches
          loss       mean cross-entropy over the code positions 1..T

Size letters: B batch, D code dimension, h/w latent grid, K codebook size (minivq.vqvae);
T positions, C model width, H heads, K output vocabulary (minivq.transformer).
"""
import numpy as np
import torch
import torch.nn.functional as F

from minivq.backend import to_numpy
from minivq.gradcheck import rel_error


# ----------------------------------------------------------------------------- shared helpers
def to_torch(params):
    """minivq params (NumPy or CuPy arrays) -> {name: CPU leaf tensor that requires grad}, same dtype."""
    return {k: torch.tensor(np.array(to_numpy(v))).requires_grad_(True) for k, v in params.items()}


def grad_errors(grads, tp):
    """rel_error of each of our gradients against torch's .grad -> {name: error}.
    A parameter the torch loss never reaches (the codebook under EMA) has grad None: zeros."""
    assert set(grads) == set(tp), f"gradient names differ: {sorted(set(grads) ^ set(tp))}"
    theirs = {k: torch.zeros_like(t) if t.grad is None else t.grad for k, t in tp.items()}
    return {k: rel_error(grads[k], theirs[k].detach().numpy()) for k in tp}


# ----------------------------------------------------------------------------- listener
def listener_loss(tp, x, lengths, y, strides):
    """The architecture of minivq.listener with params tp: x (B, C0, T) standardised features
    (zero past each clip), lengths (B,) frames per clip, y (B,) digits -> (loss, logits (B, K)).
    Three 1-D convolutions (kernel k, padding k // 2, stride s), each ReLU and zeroed past the
    clip's ceil(L / s) frames; mean over the clip's frames and max over time; two linear layers."""
    L = torch.as_tensor(np.asarray(lengths))
    h = x * (torch.arange(x.shape[2])[None, :] < L[:, None])[:, None, :]  # (B, C0, T)
    for i, s in enumerate(strides, start=1):
        w = tp[f"conv{i}_w"][:, :, 0, :]  # (F, C, k)
        h = F.relu(F.conv1d(h, w, tp[f"conv{i}_b"], stride=s, padding=w.shape[2] // 2))  # (B, F, ceil(T / s))
        L = (L + s - 1) // s
        h = h * (torch.arange(h.shape[2])[None, :] < L[:, None])[:, None, :]
    pooled = torch.cat([h.sum(dim=2) / L[:, None], h.max(dim=2).values], dim=1)  # (B, 2F)
    e = F.relu(pooled @ tp["fc1_w"] + tp["fc1_b"])  # (B, E)
    logits = e @ tp["fc2_w"] + tp["fc2_b"]  # (B, K)
    return F.cross_entropy(logits, torch.as_tensor(np.asarray(y))), logits


# ----------------------------------------------------------------------------- VQ-VAE
def vqvae_forward(tp, cfg, x):
    """x: (B, 1, H, W) tensor -> (loss, parts {'recon', 'codebook', 'commit'} (tensors), idx (B, h, w)).
    The architecture of minivq.vqvae for cfg (a VQVAEConfig), with the params tp."""
    def res(h, p):  # h + conv1x1(relu(conv3x3(relu(h))))
        a = F.relu(F.conv2d(F.relu(h), tp[p + "w1"], tp[p + "b1"], padding=1))
        return h + F.conv2d(a, tp[p + "w2"], tp[p + "b2"])

    h = x
    for i in range(cfg.n_down):
        h = F.relu(F.conv2d(h, tp[f"enc_down{i}_w"], tp[f"enc_down{i}_b"], stride=2, padding=1))
    h = F.conv2d(h, tp["enc_conv_w"], tp["enc_conv_b"], padding=1)
    for j in range(cfg.n_res):
        h = res(h, f"enc_res{j}_")
    z_e = F.conv2d(F.relu(h), tp["enc_out_w"], tp["enc_out_b"])  # (B, D, h, w)
    B, D, hh, ww = z_e.shape
    zv = z_e.permute(0, 2, 3, 1).reshape(-1, D)  # (N, D)
    cb = tp["codebook"]  # (K, D)
    idx = ((cb * cb).sum(1)[None] - 2 * zv @ cb.T).argmin(1)  # (N,) nearest code (||z||^2 cannot change it)
    e = cb[idx]  # (N, D)
    commit = cfg.beta * F.mse_loss(zv, e.detach())
    codebook = F.mse_loss(e, zv.detach()) if not cfg.ema else torch.zeros((), dtype=zv.dtype)
    zq = (zv + (e - zv).detach()).reshape(B, hh, ww, D).permute(0, 3, 1, 2)  # (B, D, h, w) straight-through
    h = F.conv2d(zq, tp["dec_in_w"], tp["dec_in_b"], padding=1)
    for j in range(cfg.n_res):
        h = res(h, f"dec_res{j}_")
    for i in range(cfg.n_down):
        h = F.conv_transpose2d(F.relu(h), tp[f"dec_up{i}_w"], tp[f"dec_up{i}_b"], stride=2, padding=1)
    recon = F.mse_loss(h, x)
    return recon + codebook + commit, {"recon": recon, "codebook": codebook, "commit": commit}, idx.reshape(B, hh, ww)


# ----------------------------------------------------------------------------- GPT prior
def gpt_sequence(cfg, grids, digits=None, null=None):
    """grids: (N, rows, cols) long tensor of codes, digits: (N,) long or None -> (N, rows*cols + 1):
    the prefix token of cfg (a GPTConfig), then the codes in cfg.order. null: (N,) bool or None,
    the rows whose prefix is the null class (cfg.null_class: the start token, "no digit")."""
    N = grids.shape[0]
    codes = (grids if cfg.order == "freq" else grids.transpose(1, 2)).reshape(N, -1)  # (N, rows*cols)
    if cfg.cond == "none":
        prefix = torch.full((N,), cfg.n_code + cfg.n_class, dtype=torch.long)  # the start token
    else:
        prefix = digits if cfg.class_token == "shared" else digits + cfg.n_code  # (N,)
    if null is not None:
        prefix = torch.where(null, torch.full_like(prefix, cfg.n_code + cfg.n_class), prefix)  # (N,)
    return torch.cat([prefix[:, None], codes], dim=1)  # (N, rows*cols + 1)


def gpt_logits(tp, cfg, idx, rng=None, speaker=None):
    """idx: (B, T) long -> logits (B, T, K). speaker: (B,) long ids (a prior with speakers). rng (a NumPy Generator) turns dropout on: its masks
    are drawn as minivq.transformer.dropout_forward draws them (same generator calls, same
    order: embedding, then attention and MLP branch of each block), so one seed gives the same
    masks on both sides and the comparison checks where dropout sits and how it scales."""
    B, T = idx.shape
    C, H, p = cfg.d_model, cfg.n_head, cfg.dropout

    def drop(a):
        if p == 0 or rng is None:
            return a
        keep = torch.tensor(rng.random(tuple(a.shape), dtype="float32") >= p)
        return a * (keep.to(a.dtype) * (1.0 / (1.0 - p)))

    x = tp["wte"][idx] + tp["wpe"][:T]  # (B, T, C)
    if cfg.class_every:
        x = x + tp["wte"][idx[:, :1]]  # (B, 1, C) the class token's row, added at every position
    if speaker is not None:
        x = x + tp["wse"][speaker][:, None]  # (B, 1, C) the speaker's row, added at every position
    x = drop(x)
    cls = idx[:, 0] - cfg.n_code if cfg.class_norm else None  # (B,) class rows: K + d -> d, start K + n -> n

    def norm(x, name):  # F.layer_norm without affine, then the (per-class) gain and bias
        if cls is None:
            return F.layer_norm(x, (C,), tp[name + ".g"], tp[name + ".b"], eps=1e-5)
        gain, bias = tp[name + ".g"] + tp[name + ".cg"][cls], tp[name + ".b"] + tp[name + ".cb"][cls]  # (B, C)
        return F.layer_norm(x, (C,), eps=1e-5) * gain[:, None] + bias[:, None]

    for l in range(cfg.n_layer):
        w = lambda k: tp[f"h{l}.{k}"]  # noqa: E731
        h = norm(x, f"h{l}.ln1")
        qkv = h @ w("attn.w_qkv") + w("attn.b_qkv")  # (B, T, 3C)
        q, k, v = (a.view(B, T, H, C // H).transpose(1, 2) for a in qkv.split(C, dim=-1))  # (B, H, T, E)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + drop(y @ w("attn.w_proj") + w("attn.b_proj"))
        h = norm(x, f"h{l}.ln2")
        x = x + drop(F.gelu(h @ w("mlp.w_fc") + w("mlp.b_fc"), approximate="tanh") @ w("mlp.w_proj") + w("mlp.b_proj"))
    h = norm(x, "ln_f")
    return h @ tp["head.w"] + tp["head.b"]  # (B, T, K)


def gpt_loss(tp, cfg, seq, rng=None, speaker=None):
    """seq: (B, T+1) long, a prefix token then codes (speaker: (B,) long ids or None) -> (mean
    cross-entropy over the T code targets in nats, logits (B, T, K)): the loss of minivq.transformer.forward."""
    logits = gpt_logits(tp, cfg, seq[:, :-1], rng, speaker)  # (B, T, K)
    return F.cross_entropy(logits.reshape(-1, cfg.n_code), seq[:, 1:].reshape(-1)), logits


def clip_grad_norm_(tensors, max_norm):
    """Scale the .grad of tensors in place by min(1, max_norm / (norm + 1e-12)), the global norm
    over all of them, as minivq.optim.clip_grad_norm does. torch.nn.utils.clip_grad_norm_ adds
    1e-6 instead of 1e-12, which alone moves the first AdamW step of the zero-initialised biases
    (gradients near Adam's eps) by ~1e-8 relative. Returns the norm before clipping."""
    grads = [t.grad for t in tensors if t.grad is not None]
    norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
    scale = min(1.0, max_norm / (norm + 1e-12))
    for g in grads:
        g.mul_(scale)
    return norm


def adamw(tp, no_decay, lr, wd):
    """torch.optim.AdamW over tp with minivq.optim's defaults, weight decay off for no_decay names."""
    groups = [{"params": [tp[k] for k in tp if k not in no_decay], "weight_decay": wd},
              {"params": [tp[k] for k in tp if k in no_decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
