"""VQ-VAE for 64x64 log-mel spectrograms: encoder -> vector quantiser -> decoder.

Size letters: B batch, C channels, H/W input height (mel bands) / width (frames),
h/w latent grid (H/s, W/s with s = 2**n_down), D code dimension, K codebook size,
N = B*h*w latent vectors.

Compression ratio CR = input cells per latent token = s*s: CR=16 -> 16x16 grid, CR=4 -> 32x32.
Reference architecture (CR=16; CR=4 drops one stride-2 stage on each side):
    encoder  conv4x4/s2 1->64, ReLU, conv4x4/s2 64->128, ReLU, conv3x3 128->128,
             2 x residual block (hidden 32), ReLU, conv1x1 128->D            -> z_e (B, D, h, w)
    quantise nearest of K codes (straight-through)                           -> z_q (B, D, h, w)
    decoder  conv3x3 D->128, 2 x residual block, ReLU,
             conv-transpose4x4/s2 128->64, ReLU, conv-transpose4x4/s2 64->1  -> x_hat (B, 1, H, W)
Loss = mean (x_hat - x)^2 + L_codebook + beta L_commit (see quantizer.py).

A model is a dict of named arrays; backward returns grads with the same keys and shapes.
"""
import dataclasses
import math
from typing import NamedTuple

from minivq import checkpoint
from minivq import conv
from minivq import layers as L
from minivq import quantizer as Q
from minivq.backend import xp, asarray, rng as host_rng
from minivq.backend import to_numpy


@dataclasses.dataclass
class VQVAEConfig:
    cr: int = 16              # compression ratio (cells per token): 4**n_down, e.g. 4 or 16
    in_size: int = 64         # input height = width (mel bands = frames)
    ch1: int = 64             # channels after the first stride-2 conv (and before the last up-conv)
    hidden: int = 128         # trunk channels around the residual blocks
    res_hidden: int = 32      # hidden channels inside a residual block
    n_res: int = 2            # residual blocks on each side
    D: int = 64               # code dimension
    K: int = 512              # codebook size
    beta: float = 0.25        # commitment loss weight
    ema: bool = True          # True: EMA codebook (no codebook loss); False: codebook loss
    ema_decay: float = 0.99   # EMA decay per step

    @property
    def n_down(self):
        """Number of stride-2 stages on each side (CR = 4**n_down)."""
        return int(round(math.log(self.cr, 4)))

    @property
    def grid(self):
        """Side of the latent token grid: in_size / 2**n_down."""
        return self.in_size >> self.n_down

    def validate(self):
        if self.cr < 4 or 4 ** self.n_down != self.cr:
            raise ValueError(f"VQVAEConfig.cr must be a power of 4 (4, 16, ...), got {self.cr}")
        if self.in_size % (2 ** self.n_down):
            raise ValueError(f"VQVAEConfig.in_size {self.in_size} is not divisible by {2 ** self.n_down}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return checkpoint.config_from_dict(cls, d, strict=False)


# ----------------------------------------------------------------------------- parameters
def _down_channels(cfg):
    """[(C_in, C_out)] of the stride-2 encoder convs: 1->ch1, then ch1->hidden for CR=16."""
    chans = [1, cfg.ch1] + [cfg.hidden] * (cfg.n_down - 1)
    return list(zip(chans[:-1], chans[1:]))


def _up_channels(cfg):
    """[(C_in, C_out)] of the stride-2 decoder conv-transposes: hidden->ch1 ... ->1."""
    chans = [cfg.hidden] + [cfg.ch1] * (cfg.n_down - 1) + [1]
    return list(zip(chans[:-1], chans[1:]))


def param_shapes(cfg):
    """name -> shape of every parameter (conv weights (F, C, KH, KW), conv-transpose (C, F, KH, KW))."""
    cfg.validate()
    s = {}
    for i, (ci, co) in enumerate(_down_channels(cfg)):
        s[f"enc_down{i}_w"], s[f"enc_down{i}_b"] = (co, ci, 4, 4), (co,)
    s["enc_conv_w"], s["enc_conv_b"] = (cfg.hidden, _down_channels(cfg)[-1][1], 3, 3), (cfg.hidden,)
    for side in ("enc", "dec"):
        if side == "dec":
            s["dec_in_w"], s["dec_in_b"] = (cfg.hidden, cfg.D, 3, 3), (cfg.hidden,)
        for j in range(cfg.n_res):
            p = f"{side}_res{j}_"
            s[p + "w1"], s[p + "b1"] = (cfg.res_hidden, cfg.hidden, 3, 3), (cfg.res_hidden,)
            s[p + "w2"], s[p + "b2"] = (cfg.hidden, cfg.res_hidden, 1, 1), (cfg.hidden,)
        if side == "enc":
            s["enc_out_w"], s["enc_out_b"] = (cfg.D, cfg.hidden, 1, 1), (cfg.D,)
            s["codebook"] = (cfg.K, cfg.D)
    for i, (ci, co) in enumerate(_up_channels(cfg)):
        s[f"dec_up{i}_w"], s[f"dec_up{i}_b"] = (ci, co, 4, 4), (co,)
    return s


def init_params(cfg, seed=0, dtype="float32"):
    """Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default for convs;
    a conv-transpose's fan-in per output pixel is C_in*KH*KW/stride^2), codebook ~ U(-1/K, 1/K)
    (usually replaced by k-means of the first batch). Drawn on the host so CPU and GPU agree."""
    g = host_rng(seed)
    shapes = param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if name == "codebook":
            a = 1.0 / cfg.K
        else:
            # a bias shares the bound of its weight: enc_conv_b -> enc_conv_w, enc_res0_b1 -> enc_res0_w1
            ws = shapes[name[:-2] + "_w" if name.endswith("_b") else name[:-2] + "w" + name[-1]] \
                if "_b" in name[-3:] or name[-2] == "b" else shape
            fan_in = ws[0] * ws[2] * ws[3] / 4 if name.startswith("dec_up") else ws[1] * ws[2] * ws[3]
            a = 1.0 / math.sqrt(fan_in)
        params[name] = asarray(g.uniform(-a, a, shape), dtype=dtype)
    return params


# ----------------------------------------------------------------------------- encoder / decoder
class EncoderCache(NamedTuple):
    down: list       # [Conv2dCache] of the n_down stride-2 convs, first to last (each halves H, W)
    down_relu: list  # [(B, C, H/2^(i+1), W/2^(i+1))] relu output after each of them
    conv: conv.Conv2dCache  # the 3x3 conv to (B, hidden, h, w)
    res: list        # [ResidualBlockCache] n_res residual blocks, (B, hidden, h, w)
    relu: object     # (B, hidden, h, w) relu before the output conv
    out: conv.Conv2dCache  # the 1x1 conv to z_e (B, D, h, w)


def encoder_forward(params, x, cfg):
    """x: (B, 1, H, W) standardised log-mel -> z_e (B, D, h, w), cache."""
    c_down, c_down_relu = [], []
    h = x
    for i in range(cfg.n_down):
        h, c = conv.conv2d_forward(h, params[f"enc_down{i}_w"], params[f"enc_down{i}_b"], stride=2, pad=1)  # (B, C, H/2, W/2)
        c_down.append(c)
        h, c = L.relu_forward(h)
        c_down_relu.append(c)
    h, c_conv = conv.conv2d_forward(h, params["enc_conv_w"], params["enc_conv_b"], stride=1, pad=1)  # (B, hidden, h, w)
    c_res = []
    for j in range(cfg.n_res):
        p = f"enc_res{j}_"
        h, c = conv.residual_block_forward(h, params[p + "w1"], params[p + "b1"], params[p + "w2"], params[p + "b2"])
        c_res.append(c)
    h, c_relu = L.relu_forward(h)
    z_e, c_out = conv.conv2d_forward(h, params["enc_out_w"], params["enc_out_b"])  # (B, D, h, w)
    return z_e, EncoderCache(c_down, c_down_relu, c_conv, c_res, c_relu, c_out)


def encoder_backward(dz_e, cache, cfg):
    """dz_e: (B, D, h, w) -> dict of encoder parameter gradients (mirror of encoder_forward)."""
    g = {}
    dh, g["enc_out_w"], g["enc_out_b"] = conv.conv2d_backward(dz_e, cache.out)
    dh = L.relu_backward(dh, cache.relu)
    for j in reversed(range(cfg.n_res)):
        p = f"enc_res{j}_"
        dh, g[p + "w1"], g[p + "b1"], g[p + "w2"], g[p + "b2"] = conv.residual_block_backward(dh, cache.res[j])
    dh, g["enc_conv_w"], g["enc_conv_b"] = conv.conv2d_backward(dh, cache.conv)
    for i in reversed(range(cfg.n_down)):
        dh = L.relu_backward(dh, cache.down_relu[i])
        dh, g[f"enc_down{i}_w"], g[f"enc_down{i}_b"] = conv.conv2d_backward(dh, cache.down[i], need_dx=i > 0)
    return g


class DecoderCache(NamedTuple):
    conv_in: conv.Conv2dCache  # the 3x3 conv z_q (B, D, h, w) -> (B, hidden, h, w)
    res: list       # [ResidualBlockCache] n_res residual blocks, (B, hidden, h, w)
    up_relu: list   # [(B, C, h 2^i, w 2^i)] relu output before each stride-2 conv-transpose
    up: list        # [ConvTranspose2dCache] of the n_down conv-transposes, first to last (each doubles H, W)


def decoder_forward(params, z_q, cfg):
    """z_q: (B, D, h, w) -> x_hat (B, 1, H, W), cache."""
    h, c_in = conv.conv2d_forward(z_q, params["dec_in_w"], params["dec_in_b"], stride=1, pad=1)  # (B, hidden, h, w)
    c_res = []
    for j in range(cfg.n_res):
        p = f"dec_res{j}_"
        h, c = conv.residual_block_forward(h, params[p + "w1"], params[p + "b1"], params[p + "w2"], params[p + "b2"])
        c_res.append(c)
    c_up_relu, c_up = [], []
    for i in range(cfg.n_down):
        h, c = L.relu_forward(h)
        c_up_relu.append(c)
        h, c = conv.conv_transpose2d_forward(h, params[f"dec_up{i}_w"], params[f"dec_up{i}_b"], stride=2, pad=1)  # (B, C, 2h, 2w)
        c_up.append(c)
    return h, DecoderCache(c_in, c_res, c_up_relu, c_up)


def decoder_backward(dx_hat, cache, cfg):
    """dx_hat: (B, 1, H, W) -> dz_q (B, D, h, w), dict of decoder parameter gradients."""
    g = {}
    dh = dx_hat
    for i in reversed(range(cfg.n_down)):
        dh, g[f"dec_up{i}_w"], g[f"dec_up{i}_b"] = conv.conv_transpose2d_backward(dh, cache.up[i])
        dh = L.relu_backward(dh, cache.up_relu[i])
    for j in reversed(range(cfg.n_res)):
        p = f"dec_res{j}_"
        dh, g[p + "w1"], g[p + "b1"], g[p + "w2"], g[p + "b2"] = conv.residual_block_backward(dh, cache.res[j])
    dz_q, g["dec_in_w"], g["dec_in_b"] = conv.conv2d_backward(dh, cache.conv_in)
    return dz_q, g


# ----------------------------------------------------------------------------- grid <-> vectors
def to_vectors(z):
    """Latent grid (B, D, h, w) -> (B*h*w, D) vectors, one row per latent position (b, i, j) in
    that order: the quantiser (and k-means) work on rows."""
    B, D, h, w = z.shape
    return z.transpose(0, 2, 3, 1).reshape(B * h * w, D)  # (N, D)


def to_grid(v, B, h, w):
    """Vectors (B*h*w, D) -> latent grid (B, D, h, w) (contiguous): the inverse of to_vectors."""
    return xp.ascontiguousarray(v.reshape(B, h, w, -1).transpose(0, 3, 1, 2))  # (B, D, h, w)




# ----------------------------------------------------------------------------- full model
def forward(params, x, cfg):
    """x: (B, 1, H, W) standardised log-mel -> (loss, parts, cache).
    parts: floats 'loss', 'recon' (MSE), 'codebook', 'commit'.
    cache: what backward needs; cache['idx'] (B, h, w) are the chosen codes and
    cache['z_e'] (N, D) the encoder outputs (for EMA updates, restarts and statistics)."""
    z_e, c_enc = encoder_forward(params, x, cfg)  # (B, D, h, w)
    B, _, h, w = z_e.shape
    ze_v = to_vectors(z_e)  # (N, D)
    zq_v, idx, vq, c_q = Q.quantize_forward(ze_v, params["codebook"], beta=cfg.beta, codebook_loss=not cfg.ema)
    z_q = to_grid(zq_v, B, h, w)  # (B, D, h, w)
    x_hat, c_dec = decoder_forward(params, z_q, cfg)  # (B, 1, H, W)
    recon, dx_hat = L.mse(x_hat, x)
    loss = recon + vq["codebook"] + vq["commit"]
    parts = {"loss": float(loss), "recon": float(recon), "codebook": vq["codebook"], "commit": vq["commit"]}
    cache = {"cfg": cfg,  # the VQVAEConfig (backward loops over its n_down / n_res)
             "enc": c_enc,  # EncoderCache
             "q": c_q,  # quantizer.QuantizeCache
             "dec": c_dec,  # DecoderCache
             "dx_hat": dx_hat,  # (B, 1, H, W) gradient of the MSE w.r.t. x_hat
             "shape": (B, h, w),  # of the latent grid
             "idx": idx.reshape(B, h, w),  # (B, h, w) chosen codes
             "z_e": ze_v,  # (N, D) encoder outputs as rows
             "x_hat": x_hat}  # (B, 1, H, W) the reconstruction
    return loss, parts, cache


def backward(cache):
    """Gradients of forward's loss -> dict with the params' keys and shapes.
    Straight line, mirroring forward: mse -> decoder -> straight-through quantiser -> encoder."""
    cfg = cache["cfg"]
    B, h, w = cache["shape"]
    dz_q, grads = decoder_backward(cache["dx_hat"], cache["dec"], cfg)  # (B, D, h, w)
    dze_v, grads["codebook"] = Q.quantize_backward(to_vectors(dz_q), cache["q"], dloss=1.0)  # (N, D), (K, D)
    grads.update(encoder_backward(to_grid(dze_v, B, h, w), cache["enc"], cfg))
    return grads


def encode(params, x, cfg, batch=256):
    """x: (B, 1, H, W) -> token grid idx (B, h, w) int64 (in chunks of `batch`)."""
    out = []
    for s in range(0, x.shape[0], batch):
        z_e, _ = encoder_forward(params, x[s:s + batch], cfg)  # (b, D, h, w)
        b, _, h, w = z_e.shape
        idx, _ = Q.nearest_code(to_vectors(z_e), params["codebook"])
        out.append(idx.reshape(b, h, w))
    return xp.concatenate(out) if out else xp.zeros((0, cfg.grid, cfg.grid), dtype=xp.int64)


def decode(params, idx, cfg, batch=256):
    """idx: (B, h, w) int token grid -> x_hat (B, 1, H, W) standardised log-mel."""
    idx = asarray(idx)
    if idx.ndim != 3 or idx.shape[1:] != (cfg.grid, cfg.grid):
        raise ValueError(f"decode expects token grids of shape (B, {cfg.grid}, {cfg.grid}), got {tuple(idx.shape)}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= cfg.K):
        raise ValueError(f"decode: token ids must lie in [0, {cfg.K}), got {int(idx.min())}..{int(idx.max())}")
    out = []
    for s in range(0, idx.shape[0], batch):
        e = params["codebook"][idx[s:s + batch]]  # (b, h, w, D)
        x_hat, _ = decoder_forward(params, xp.ascontiguousarray(e.transpose(0, 3, 1, 2)), cfg)  # (b, 1, H, W)
        out.append(x_hat)
    return xp.concatenate(out)


def reconstruct(params, x, cfg, batch=256):
    """x: (B, 1, H, W) -> x_hat (B, 1, H, W): encode, quantise, decode."""
    return decode(params, encode(params, x, cfg, batch), cfg, batch)


# ----------------------------------------------------------------------------- inference on raw log-mels
# The model sees standardised log-mels: x_std = (x - mean) / std with two scalars (``norm``)
# measured once on the training set and stored in the checkpoint beside the params.
def standardise_stats(x):
    """x: (N, M, T) raw log-mel -> norm {'mean', 'std'}: scalars of the training set (float64 sums, on the host)."""
    x = to_numpy(x)
    return {"mean": float(x.mean(dtype="float64")), "std": float(x.std(dtype="float64"))}


def standardise(x, norm):
    """x: (N, M, T) raw log-mel (host) -> (N, 1, M, T) float32 standardised, on the backend."""
    x = to_numpy(x).astype("float32", copy=False)  # (N, M, T)
    return asarray(((x - norm["mean"]) / norm["std"])[:, None], dtype="float32")  # (N, 1, M, T)


def encode_logmel(params, cfg, norm, logmel, batch=256):
    """logmel: (B, M, T) raw log-mel (NumPy) -> token grids (B, h, w) int64 NumPy."""
    return to_numpy(encode(params, standardise(logmel, norm), cfg, batch))


def decode_logmel(params, cfg, norm, idx, batch=256):
    """idx: (B, h, w) token grids -> (B, M, T) raw (un-standardised) log-mel float32 NumPy."""
    x = to_numpy(decode(params, asarray(idx, dtype="int64"), cfg, batch))[:, 0]  # (B, M, T)
    return (x * norm["std"] + norm["mean"]).astype("float32")


# ----------------------------------------------------------------------------- persistence
def save_vqvae(path, params, cfg, norm, train=None, features=None, meta=None):
    """Write a finished model (vqvae.npz): params, config {'vqvae', 'train', 'features'} and
    the standardisation scalars (extra norm_mean/norm_std). ``train``/``features``: plain dicts
    of the settings it was trained with (recorded, not needed to load). No optimiser state:
    the trainer's resumable last.npz holds that."""
    config = {"vqvae": cfg.to_dict()}
    if train is not None:
        config["train"] = train
    if features is not None:
        config["features"] = features
    return checkpoint.save(path, params, config=config, meta=meta,
                           extra={"norm_mean": float(norm["mean"]), "norm_std": float(norm["std"])})  # float64


def load_vqvae(path):
    """Read vqvae.npz or a trainer's last.npz -> (params on the backend, VQVAEConfig, norm {'mean','std'})."""
    ck = checkpoint.load(path)
    if "vqvae" not in ck["config"]:
        raise ValueError(f"checkpoint {path} does not hold a VQ-VAE (no 'vqvae' config)")
    cfg = VQVAEConfig.from_dict(ck["config"]["vqvae"])
    params = {k: asarray(v) for k, v in ck["params"].items()}
    norm = {"mean": float(ck["extra"]["norm_mean"]), "std": float(ck["extra"]["norm_std"])}
    return params, cfg, norm
