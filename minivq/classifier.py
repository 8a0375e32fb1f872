"""Digit classifier: a small CNN on standardised log-mel spectrograms, built from layers.py.

It judges the pipeline's output: is a generated / reconstructed spectrogram recognisably the
digit it should be (accuracy), and where does it sit among real ones (its penultimate
features feed the TopP&R / PRDC / Frechet metrics).

Size letters: B batch, M mel bands (image height), T frames (image width), C1..C4 conv
channels, P = C4 * (M/16) * (T/16) flattened features, E embedding size, K classes (10).

Architecture (fixed depth, so forward and backward are straight-line code side by side):

    x (B, 1, M, T) -> [conv3x3 stride 2 pad 1 -> relu] x 4 -> (B, C4, M/16, T/16)
      -> flatten (B, P) -> linear = embedding (B, E) -> relu -> linear -> logits (B, K)

Stride-2 convolutions halve the image each time (no pooling layer needed); flattening
(rather than global pooling) keeps *where* in frequency and time a pattern sits, which is
what tells "six" from "seven". Input standardisation (per-mel-band mean/std of the training
split, ``band_stats``; not the VQ-VAE's one global mean/std) lives outside the model:
``standardise`` applies the stats stored in the checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

from minivq import checkpoint
from minivq.backend import asarray, rng, xp
from minivq.conv import Conv2dCache, conv2d_backward, conv2d_forward
from minivq.layers import (LinearCache, linear_backward, linear_forward, relu_backward, relu_forward, softmax,
                           softmax_cross_entropy)

CONVS = ("conv1", "conv2", "conv3", "conv4")


@dataclasses.dataclass
class ClassifierConfig:
    """Shape of the classifier (saved in every checkpoint)."""
    n_mels: int = 64                   # image height M (mel bands)
    n_frames: int = 64                 # image width T (frames)
    channels: tuple = (8, 16, 32, 32)  # C1..C4: output channels of the four stride-2 convs
    embed_dim: int = 32                # E: penultimate feature size (the metrics' embedding), <= 32
    n_classes: int = 10                # K: digits 0-9
    # labels: the names of the K classes when they are not the digits 0..K-1 (a speaker
    # classifier's speaker names, class k = labels[k]); empty for the digit classifier.
    labels: tuple = ()

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.labels = tuple(str(s) for s in self.labels)
        if self.labels and len(self.labels) != self.n_classes:
            raise ValueError(f"ClassifierConfig.labels names {len(self.labels)} classes, n_classes is {self.n_classes}")
        if len(self.channels) != 4:
            raise ValueError(f"ClassifierConfig.channels needs 4 conv widths, got {self.channels}")
        if not 1 <= self.embed_dim <= 32:
            raise ValueError(f"ClassifierConfig.embed_dim must be in 1..32, got {self.embed_dim}")

    def feature_hw(self):
        """Spatial size after four 3x3 / stride-2 / pad-1 convs: each maps n -> ceil(n / 2)."""
        h, w = self.n_mels, self.n_frames
        for _ in range(4):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def n_flat(self):
        h, w = self.feature_hw()
        return self.channels[3] * h * w

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["labels"] = list(self.labels)
        if not self.labels:  # the digit classifier's record stays as it always was
            del d["labels"]
        return d

    @classmethod
    def from_dict(cls, d):
        return checkpoint.config_from_dict(cls, d)


def init_params(cfg: ClassifierConfig, seed=0, dtype="float32"):
    """He-normal weights (std sqrt(2 / fan_in), right for ReLU), zero biases.
    Drawn on the host so a seed gives the same model on CPU and GPU."""
    g = rng(seed)
    p, zeros = {}, {}
    c_in = 1
    for name, c_out in zip(CONVS, cfg.channels):
        fan_in = c_in * 9
        p[f"{name}_w"] = g.standard_normal((c_out, c_in, 3, 3)) * (2.0 / fan_in) ** 0.5  # (C_out, C_in, 3, 3)
        zeros[f"{name}_b"] = c_out
        c_in = c_out
    P, E, K = cfg.n_flat(), cfg.embed_dim, cfg.n_classes
    p["fc1_w"] = g.standard_normal((P, E)) * (2.0 / P) ** 0.5  # (P, E)
    zeros["fc1_b"] = E
    p["fc2_w"] = g.standard_normal((E, K)) * (1.0 / E) ** 0.5  # (E, K)
    zeros["fc2_b"] = K
    params = {k: asarray(v, dtype=dtype) for k, v in p.items()}
    params.update({k: xp.zeros(n, dtype=dtype) for k, n in zeros.items()})  # biases (n,)
    return {k: params[k] for k in param_names()}  # stable order: conv1..4, fc1, fc2


def param_names():
    """Parameter names in forward order."""
    return [f"{n}_{s}" for n in CONVS + ("fc1", "fc2") for s in ("w", "b")]


def _check_input(params, x):
    """Raise ValueError unless x is (B, 1, M, T) and M, T fit the params' flatten size."""
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
        raise ValueError(f"classifier input must have shape (B, 1, n_mels, n_frames) with B >= 1, "
                         f"got {tuple(x.shape)}")
    h, w = x.shape[2:]
    for _ in range(4):
        h, w = (h + 1) // 2, (w + 1) // 2
    c4 = params["conv4_w"].shape[0]
    if c4 * h * w != params["fc1_w"].shape[0]:
        raise ValueError(f"classifier input of size {x.shape[2]} x {x.shape[3]} gives {c4 * h * w} "
                         f"features after the convs, but the model expects {params['fc1_w'].shape[0]} "
                         "(the default model takes 64 x 64 log-mels)")


class ClassifierCache(NamedTuple):
    dlogits: object    # (B, K) gradient of the mean cross-entropy w.r.t. the logits; None without labels
    conv1: Conv2dCache  # input (B, 1, M, T) -> (B, C1, M/2, T/2)
    relu1: object      # (B, C1, M/2, T/2) relu output
    conv2: Conv2dCache  # -> (B, C2, M/4, T/4)
    relu2: object      # (B, C2, M/4, T/4)
    conv3: Conv2dCache  # -> (B, C3, M/8, T/8)
    relu3: object      # (B, C3, M/8, T/8)
    conv4: Conv2dCache  # -> (B, C4, M/16, T/16)
    relu4: object      # (B, C4, M/16, T/16)
    a4_shape: tuple    # (B, C4, M/16, T/16), to unflatten the gradient of (B, P)
    fc1: LinearCache   # flat (B, P) -> (B, E)
    relu5: object      # (B, E) relu of fc1's output
    fc2: LinearCache   # emb (B, E) -> logits (B, K)
    embedding: object  # (B, E) fc1's output before its relu (see embedding_of)


def forward(params, x, y=None):
    """x: (B, 1, M, T) standardised log-mel, y: (B,) int digits or None
    -> (loss or None, logits (B, K), cache). loss = mean cross-entropy of softmax(logits)."""
    _check_input(params, x)
    x = x.astype(params["conv1_w"].dtype, copy=False)
    h1, c1 = conv2d_forward(x, params["conv1_w"], params["conv1_b"], stride=2, pad=1)  # (B, C1, M/2, T/2)
    a1, r1 = relu_forward(h1)
    h2, c2 = conv2d_forward(a1, params["conv2_w"], params["conv2_b"], stride=2, pad=1)  # (B, C2, M/4, T/4)
    a2, r2 = relu_forward(h2)
    h3, c3 = conv2d_forward(a2, params["conv3_w"], params["conv3_b"], stride=2, pad=1)  # (B, C3, M/8, T/8)
    a3, r3 = relu_forward(h3)
    h4, c4 = conv2d_forward(a3, params["conv4_w"], params["conv4_b"], stride=2, pad=1)  # (B, C4, M/16, T/16)
    a4, r4 = relu_forward(h4)
    flat = a4.reshape(a4.shape[0], -1)  # (B, P)
    h5, c5 = linear_forward(flat, params["fc1_w"], params["fc1_b"])  # (B, E)
    emb, r5 = relu_forward(h5)
    logits, c6 = linear_forward(emb, params["fc2_w"], params["fc2_b"])  # (B, K)
    loss, dlogits = (None, None) if y is None else softmax_cross_entropy(logits, asarray(y))
    cache = ClassifierCache(dlogits, c1, r1, c2, r2, c3, r3, c4, r4, a4.shape, c5, r5, c6, h5)
    return loss, logits, cache


def embedding_of(cache):
    """The embedding (B, E) of a forward pass: fc1's output *before* its relu. After the relu
    about half the units are exactly 0 on a given set (dead for those inputs), which makes
    covariance-based metrics (Frechet) singular; the pre-activation keeps all E directions."""
    return cache.embedding


def backward(cache):
    """Gradients of the mean cross-entropy w.r.t. every parameter (a dict like params).
    The exact mirror of forward, read bottom-up."""
    c = cache
    if c.dlogits is None:
        raise ValueError("backward needs a cache from forward(params, x, y) with labels y")
    g = {}
    demb, g["fc2_w"], g["fc2_b"] = linear_backward(c.dlogits, c.fc2)  # (B, E)
    dh5 = relu_backward(demb, c.relu5)
    dflat, g["fc1_w"], g["fc1_b"] = linear_backward(dh5, c.fc1)  # (B, P)
    da4 = dflat.reshape(c.a4_shape)  # (B, C4, M/16, T/16)
    dh4 = relu_backward(da4, c.relu4)
    da3, g["conv4_w"], g["conv4_b"] = conv2d_backward(dh4, c.conv4)  # (B, C3, M/8, T/8)
    dh3 = relu_backward(da3, c.relu3)
    da2, g["conv3_w"], g["conv3_b"] = conv2d_backward(dh3, c.conv3)  # (B, C2, M/4, T/4)
    dh2 = relu_backward(da2, c.relu2)
    da1, g["conv2_w"], g["conv2_b"] = conv2d_backward(dh2, c.conv2)  # (B, C1, M/2, T/2)
    dh1 = relu_backward(da1, c.relu1)
    _, g["conv1_w"], g["conv1_b"] = conv2d_backward(dh1, c.conv1, need_dx=False)  # the input needs no gradient
    return g


def _as_batch(x):
    """Accept (M, T), (B, M, T) or (B, 1, M, T); return (B, 1, M, T) on the backend."""
    x = asarray(x)
    if x.ndim == 2:
        x = x[None, None]  # (1, 1, M, T)
    elif x.ndim == 3:
        x = x[:, None]  # (B, 1, M, T)
    if x.ndim != 4:
        raise ValueError(f"classifier input must be (M, T), (B, M, T) or (B, 1, M, T), got shape {tuple(x.shape)}")
    return x


def _run_batched(params, x, batch, what):
    """Forward in chunks of ``batch`` rows (bounded memory) -> (B, E) embeddings or (B, K) probs."""
    x = _as_batch(x)
    outs = []
    for i in range(0, x.shape[0], batch):
        _, logits, cache = forward(params, x[i:i + batch])
        if what == "embed":
            outs.append(embedding_of(cache))
        else:
            outs.append(softmax(logits))  # (b, K)
    return xp.concatenate(outs)  # (B, E) or (B, K)


def predict(params, x, batch=256):
    """x: standardised log-mel (B, 1, M, T) (or (B, M, T) / (M, T)) -> class probabilities (B, K)."""
    return _run_batched(params, x, batch, "probs")


def embed(params, x, batch=256):
    """x: standardised log-mel (B, 1, M, T) (or (B, M, T) / (M, T)) -> penultimate features (B, E),
    E <= 32: the space in which TopP&R, PRDC and the Frechet distance compare sample sets."""
    return _run_batched(params, x, batch, "embed")


# ----------------------------------------------------------------------------- per-band standardisation
def fit_band_stats(x_train):
    """x_train: (N, M, T) raw log-mel -> {"mean": (M, 1), "std": (M, 1)} per mel band over
    every clip and frame of the training split (std floored at 1e-3 against silent bands)."""
    x = asarray(x_train, dtype="float64")
    mean = x.mean(axis=(0, 2)).reshape(-1, 1)  # (M, 1)
    std = xp.maximum(x.std(axis=(0, 2)).reshape(-1, 1), 1e-3)  # (M, 1)
    return {"mean": mean.astype("float32"), "std": std.astype("float32")}




def standardise(logmel, band_stats):
    """logmel: raw (unstandardised) log-mel (M, T), (B, M, T) or (B, 1, M, T)
    -> (B, 1, M, T) float32 with the training split's per-band mean/std removed."""
    x = _as_batch(logmel)
    mean, std = asarray(band_stats["mean"]), asarray(band_stats["std"])
    if x.shape[2] != mean.shape[0]:
        raise ValueError(f"log-mel has {x.shape[2]} mel bands but the normalisation stats have {mean.shape[0]}")
    return ((x - mean) / std).astype("float32")  # (B, 1, M, T)


# ----------------------------------------------------------------------------- checkpoints
def save_classifier(path, params, cfg, band_stats, meta=None, opt_state=None):
    """Write a classifier checkpoint: params, config, per-band stats in ``extra`` (as norm_mean /
    norm_std, the names the file format has always used), meta."""
    return checkpoint.save(path, params, config=cfg.to_dict(), opt_state=opt_state, meta=meta,
                           extra={"norm_mean": band_stats["mean"], "norm_std": band_stats["std"]})


def load_classifier(path):
    """-> (params on the backend, ClassifierConfig, band_stats {"mean", "std"} (M, 1) host arrays)."""
    ck = checkpoint.load(path)
    if "norm_mean" not in ck["extra"] or "conv1_w" not in ck["params"]:
        raise ValueError(f"checkpoint {path} is not a classifier checkpoint (no conv1_w / norm stats)")
    cfg = ClassifierConfig.from_dict(ck["config"])
    params = {k: asarray(v) for k, v in ck["params"].items()}
    band_stats = {"mean": ck["extra"]["norm_mean"], "std": ck["extra"]["norm_std"]}
    return params, cfg, band_stats


def classify(params, band_stats, logmel, batch=256):
    """Raw log-mel (as audio.log_mel makes it) (M, T) or (B, M, T) -> probabilities (B, K).
    Applies the stored per-band standardisation, then predict."""
    return predict(params, standardise(logmel, band_stats), batch)


def classify_embed(params, band_stats, logmel, batch=256):
    """Raw log-mel (M, T) or (B, M, T) -> embeddings (B, E) (standardised with the stored stats)."""
    return embed(params, standardise(logmel, band_stats), batch)
