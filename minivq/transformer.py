"""Decoder-only transformer (GPT) over VQ-VAE tokens: config, init, forward -> (loss, cache),
and a straight-line backward.

Size letters: B batch, T positions fed to the model, C model width (d_model), H heads,
V input vocabulary (codes + prefix tokens), K codebook size (the output vocabulary), L layers.

Token layout. A VQ-VAE grid (16 mel rows x 16 time columns of codes) is flattened to 256
codes, row after row (``order="freq"``, default) or column after column (``order="time"``),
and one prefix token goes in front, so a sequence has 257 tokens:
    conditional     [class_d, z_0, ..., z_255]
    unconditional   [start,   z_0, ..., z_255]
The model reads tokens 0..255 (T = 256 = ``context``) and predicts tokens 1..256, which
are all codes, so the loss covers exactly the code positions and the LM head only needs
K outputs: a sampled token can never be a prefix token.
Input vocabulary, ``class_token="dedicated"`` (default): codes 0..K-1, class tokens
K..K+9, start token K+10 (V = K + 11). ``class_token="shared"`` is the paper's variant
"without creating an embedding": digit d is fed as code token d (V = K), conditional only.
``class_every=True`` also adds the class token's embedding to every position's input:
    x_t = wte[token_t] + wpe[t] + wte[class_d]
so the digit reaches each position directly, not only through attention to position 0.
``null_class=True`` (dedicated class tokens only) lets the prefix also be the "no digit" class:
its id is the start token K+10, whose embedding row a conditional prior otherwise never uses,
so V and every parameter shape stay as they are. A prior trained with some sequences' class
replaced by it (train_prior's p_uncond) is a conditional and an unconditional model in one,
which is what classifier-free guidance needs (sampling.sample with guidance and no guide).
``speakers`` (a tuple of S names, empty by default = off) adds a second condition, the voice:
a speaker embedding table wse (S, C) whose row for the sequence's speaker s is added to every
position's input, like class_every adds the class row:
    x_t = wte[token_t] + wpe[t] (+ wte[class_d]) + wse[s]
The speaker is not a token of the sequence (the layout above is unchanged); it travels beside
it as one integer id per sequence, cfg.speaker_ids(names) maps names to ids. The names live in
the config, so a checkpoint carries the vocabulary its ids refer to.
``class_norm=True`` (dedicated class tokens only) also conditions every LayerNorm on the digit
(adaptive LayerNorm, as FiLM/adaLN): each LayerNorm gets two tables cg, cb of shape
(n_class + 1, C), one row per class plus the null class, and a sequence of class c uses
    LN_c(x) = (g + cg[c]) * xhat + (b + cb[c])
in place of g * xhat + b. The tables start at zero (the model starts as it would without
them), so the digit can scale and shift the features of every layer, not only the input.

One block (pre-LayerNorm, as in GPT-2):
    x = x + Dropout(Attn(LN1(x)))
    x = x + Dropout(W2 GELU(W1 LN2(x)))
"""
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import NamedTuple

from minivq import checkpoint
from minivq.attention import (ATTN_KEYS, AttentionCache, attention_backward, attention_forward, attention_probs,
                              attention_step, init_attention)
from minivq.backend import asarray, xp
from minivq.backend import to_numpy
from minivq.backend import rng as host_rng
from minivq.layers import (GeluCache, LayernormCache, LinearCache, embedding_backward, embedding_forward,
                           gelu_backward, gelu_forward, layernorm_backward, layernorm_dx, layernorm_forward,
                           linear_backward, linear_forward, scatter_sum, softmax_cross_entropy, stable_exp)

PRIOR_CKPT = "prior.npz"  # the file a trained prior is saved in (its trainer writes it, load_prior reads it)
NATS_PER_BIT = 0.6931471805599453  # ln 2: a loss in nats / NATS_PER_BIT = the loss in bits


@dataclass
class GPTConfig:
    n_code: int = 512  # K: codebook size = output vocabulary
    n_class: int = 10  # number of class labels (digits)
    cond: str = "class"  # prefix the model is trained with: "class" (the digit) or "none" (start token)
    class_token: str = "dedicated"  # "dedicated": own embedding rows; "shared": digit d is code token d
    context: int = 256  # T: positions read (prefix + 255 codes); sequences are context + 1 tokens
    d_model: int = 128  # C: residual stream width
    n_layer: int = 4  # L: number of blocks
    n_head: int = 4  # H: attention heads (d_model % n_head == 0)
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    dropout: float = 0.0  # dropout on embeddings and residual branches while training
    # order in which the (mel row, time column) grid of codes is read into a sequence:
    # "freq": row after row (one mel band across all frames, then the next band);
    # "time": column after column (all bands of one frame, then the next frame).
    order: str = "freq"
    # class_every: also add the class token's embedding to the input of every position, so each
    # position reads the digit directly instead of only through attention to position 0.
    # None: on for class-conditional priors with dedicated class tokens, off otherwise.
    class_every: bool = None
    # null_class: the prior also knows a "no digit" class (the start token as prefix), trained by
    # replacing a fraction of the training sequences' class with it, so one model gives both the
    # conditional and the unconditional logits of classifier-free guidance.
    null_class: bool = False
    # speakers: names of the S speakers the prior is also conditioned on (the ids are positions in
    # this tuple); empty: no speaker condition and no speaker embedding (wse) at all.
    speakers: tuple = ()
    # class_norm: every LayerNorm's gain and bias also get a learned row per class (adaptive
    # LayerNorm), so the digit modulates every block, not only the embeddings.
    class_norm: bool = False

    def __post_init__(self):
        if isinstance(self.speakers, str) or not all(isinstance(s, str) and s for s in self.speakers):
            raise ValueError(f"GPTConfig.speakers must be a sequence of non-empty names, got {self.speakers!r}")
        self.speakers = tuple(self.speakers)
        if len(set(self.speakers)) != len(self.speakers):
            raise ValueError(f"GPTConfig.speakers has repeated names: {list(self.speakers)}")
        if self.class_every is None:
            self.class_every = (self.cond, self.class_token) == ("class", "dedicated")
        if self.cond not in ("class", "none"):
            raise ValueError(f"GPTConfig.cond must be 'class' or 'none', got {self.cond!r}")
        if self.class_token not in ("dedicated", "shared"):
            raise ValueError(f"GPTConfig.class_token must be 'dedicated' or 'shared', got {self.class_token!r}")
        if self.class_token == "shared" and self.cond != "class":
            raise ValueError("class_token='shared' only applies to class-conditional priors (cond='class')")
        if self.class_token == "shared" and self.n_code < self.n_class:
            raise ValueError(f"class_token='shared' needs at least {self.n_class} codes, got {self.n_code}")
        for name in ("n_code", "n_class", "context", "d_model", "n_layer", "n_head", "mlp_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"GPTConfig.{name} must be a whole number >= 1, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.class_every and (self.cond, self.class_token) != ("class", "dedicated"):
            raise ValueError("class_every needs a class-conditional prior with dedicated class tokens")
        if self.order not in ("freq", "time"):
            raise ValueError(f"GPTConfig.order must be 'freq' or 'time', got {self.order!r}")
        if self.null_class and (self.cond, self.class_token) != ("class", "dedicated"):
            raise ValueError("null_class needs a class-conditional prior with dedicated class tokens")
        if self.class_norm and (self.cond, self.class_token) != ("class", "dedicated"):
            raise ValueError("class_norm needs a class-conditional prior with dedicated class tokens")

    @property
    def vocab_size(self):
        """V: rows of the token embedding."""
        return self.n_code if self.class_token == "shared" else self.n_code + self.n_class + 1

    @property
    def n_speaker(self):
        """S: number of speakers the prior is conditioned on (0: no speaker condition)."""
        return len(self.speakers)

    def speaker_ids(self, names):
        """Speaker names (a name or a sequence of N names) -> int64 ids (N,) into wse. An unknown
        name is a ValueError that lists the known ones."""
        if not self.speakers:
            raise ValueError("this prior has no speaker condition (it was trained without speakers)")
        names = [names] if isinstance(names, str) else list(names)
        index = {s: i for i, s in enumerate(self.speakers)}
        unknown = sorted({str(n) for n in names if n not in index})
        if unknown:
            raise ValueError(f"unknown speaker {', '.join(map(repr, unknown))}; this prior knows "
                             f"{', '.join(self.speakers)}")
        return xp.asarray([index[n] for n in names], dtype="int64")  # (N,)

    def check_speaker(self, speaker, n):
        """speaker: None or n int ids -> None or int64 ids (n,) on the backend; ValueError when a
        speaker-conditioned prior gets none, an unconditioned one gets some, or an id is out of range."""
        if not self.speakers:
            if speaker is not None:
                raise ValueError("this prior has no speaker condition (it was trained without speakers); "
                                 "do not pass speakers")
            return None
        if speaker is None:
            raise ValueError(f"this prior is conditioned on the speaker; pass one of {', '.join(self.speakers)}")
        s = xp.asarray(speaker).astype("int64").reshape(-1)  # (n,)
        if s.size != n:
            raise ValueError(f"{s.size} speaker ids for {n} sequences")
        if s.size and (int(s.min()) < 0 or int(s.max()) >= self.n_speaker):
            raise ValueError(f"speaker ids must lie in 0..{self.n_speaker - 1}")
        return s

    @property
    def start_token(self):
        return self.n_code + self.n_class

    @property
    def null_token(self):
        """The prefix id of the "no digit" class (null_class=True): the start token K + n_class."""
        if not self.null_class:
            raise ValueError("this prior has no null class (GPTConfig.null_class is False)")
        return self.start_token

    def prefix(self, digits=None, n=None):
        """Prefix token ids (N,) for class labels ``digits`` (cond='class') or n start tokens."""
        if self.cond == "none":
            if digits is not None:
                raise ValueError("this prior is unconditional (cond='none'); do not pass digits")
            return xp.full((n,), self.start_token, dtype="int64")  # (N,)
        if digits is None:
            raise ValueError("this prior is class-conditional (cond='class'); pass the digits to condition on")
        d = xp.asarray(digits).astype("int64").reshape(-1)  # (N,)
        if d.size and (int(d.min()) < 0 or int(d.max()) >= self.n_class):
            raise ValueError(f"digits must lie in 0..{self.n_class - 1}")
        return d if self.class_token == "shared" else d + self.n_code  # (N,)

    def to_sequence(self, grids):
        """Code grids (N, rows, cols) -> sequences (N, rows * cols) in this prior's order."""
        g = grids if self.order == "freq" else grids.transpose(0, 2, 1)  # (N, rows, cols) or (N, cols, rows)
        return g.reshape(len(g), -1)  # (N, T)

    def to_grid(self, codes, rows, cols):
        """Sequences (N, rows * cols) -> code grids (N, rows, cols): the inverse of to_sequence."""
        if self.order == "freq":
            return codes.reshape(len(codes), rows, cols)  # (N, rows, cols)
        return codes.reshape(len(codes), cols, rows).transpose(0, 2, 1)  # (N, rows, cols)

    def class_ids(self, idx):
        """Prefix tokens (B,) -> row ids (B,) into the class_norm tables: digit d -> d, the null
        class (start token K + n_class) -> n_class."""
        return idx - self.n_code  # dedicated class tokens are K + d

    def to_dict(self):
        d = asdict(self)
        d["speakers"] = list(self.speakers)
        if not self.speakers:  # a prior without speakers keeps the record it always had
            del d["speakers"]
        if not self.class_norm:  # likewise a prior without class_norm
            del d["class_norm"]
        return d

    @classmethod
    def from_dict(cls, d):
        d = {"order": "freq", "class_every": False, "null_class": False, "speakers": (), "class_norm": False,
             **d}  # what checkpoints before these fields did
        return checkpoint.config_from_dict(cls, d, strict=False)


BLOCK_KEYS = ("ln1.g", "ln1.b", *("attn." + k for k in ATTN_KEYS),
              "ln2.g", "ln2.b", "mlp.w_fc", "mlp.b_fc", "mlp.w_proj", "mlp.b_proj")
CLASS_NORM_KEYS = ("ln1.cg", "ln1.cb", "ln2.cg", "ln2.cb")  # a block's class_norm tables (n_class + 1, C)


def init_params(cfg, seed=0, std=0.02):
    """float32 parameter dict on the current backend. Names: wte (V, C), wpe (T, C),
    h{l}.<BLOCK_KEYS>, ln_f.g/b (C,), head.w (C, K), head.b (K,), and wse (S, C) when the prior
    has speakers (drawn last, so every other parameter is the same as without speakers), and
    with class_norm h{l}.<CLASS_NORM_KEYS> and ln_f.cg/cb (n_class + 1, C), all zeros."""
    rng = host_rng(seed)
    C, Hd = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    f32 = lambda shape, s: asarray((rng.standard_normal(shape) * s).astype("float32"))  # noqa: E731
    p = {"wte": f32((cfg.vocab_size, C), std),  # (V, C)
         "wpe": f32((cfg.context, C), std)}  # (T, C)
    for l in range(cfg.n_layer):
        a = init_attention(C, rng, n_layer=cfg.n_layer, std=std)
        p.update({f"h{l}.ln1.g": xp.ones(C, dtype="float32"), f"h{l}.ln1.b": xp.zeros(C, dtype="float32"),
                  **{f"h{l}.attn.{k}": v for k, v in a.items()},
                  f"h{l}.ln2.g": xp.ones(C, dtype="float32"), f"h{l}.ln2.b": xp.zeros(C, dtype="float32"),
                  f"h{l}.mlp.w_fc": f32((C, Hd), std),  # (C, 4C)
                  f"h{l}.mlp.b_fc": xp.zeros(Hd, dtype="float32"),  # (4C,)
                  f"h{l}.mlp.w_proj": f32((Hd, C), std / (2 * cfg.n_layer) ** 0.5),  # (4C, C)
                  f"h{l}.mlp.b_proj": xp.zeros(C, dtype="float32")})
    p["ln_f.g"], p["ln_f.b"] = xp.ones(C, dtype="float32"), xp.zeros(C, dtype="float32")
    p["head.w"] = f32((C, cfg.n_code), std)  # (C, K)
    p["head.b"] = xp.zeros(cfg.n_code, dtype="float32")  # (K,)
    if cfg.n_speaker:
        p["wse"] = f32((cfg.n_speaker, C), std)  # (S, C)
    if cfg.class_norm:  # zeros: at step 0 every class's LayerNorm is the plain one
        for name in [f"h{l}.{k}" for l in range(cfg.n_layer) for k in CLASS_NORM_KEYS] + ["ln_f.cg", "ln_f.cb"]:
            p[name] = xp.zeros((cfg.n_class + 1, C), dtype="float32")  # (n_class + 1, C)
    return p


def no_decay_names(params):
    """Parameters that get no weight decay: biases, LayerNorm gains (and their class tables), embeddings."""
    return tuple(k for k in params
                 if k.endswith((".b", ".g", ".cb", ".cg")) or ".b_" in k or k in ("wte", "wpe", "wse"))


def n_params(params):
    return int(sum(p.size for p in params.values()))


# ----------------------------------------------------------------------------- dropout
def dropout_forward(x, p, rng):
    """Inverted dropout: keep each element with prob 1-p and scale by 1/(1-p), so the
    expected value is unchanged and evaluation needs no rescaling. Identity when p == 0
    or rng is None (evaluation). The mask is drawn on the host (rng: NumPy Generator)."""
    if p == 0 or rng is None:
        return x, None
    mask = asarray(rng.random(x.shape, dtype="float32") >= p).astype(x.dtype) * (1.0 / (1.0 - p))  # x.shape
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout if mask is None else dout * mask


# ----------------------------------------------------------------------------- LayerNorm, plain or per class
def norm_forward(x, p, name, cls=None):
    """LayerNorm ``name`` (ln1, ln2 of a block's params, ln_f of the model's) over x (B, T, C).
    cls=None: the plain one, p[name.g] * xhat + p[name.b].
    cls=(B,) class row ids (class_norm): sequence b uses its class's gain and bias,
        (g + cg[cls_b]) * xhat + (b + cb[cls_b]),
    one (C,) pair per sequence, broadcast over its T positions."""
    if cls is None:
        return layernorm_forward(x, p[name + ".g"], p[name + ".b"])
    gain = (p[name + ".g"] + p[name + ".cg"][cls])[:, None, :]  # (B, 1, C)
    bias = (p[name + ".b"] + p[name + ".cb"][cls])[:, None, :]  # (B, 1, C)
    return layernorm_forward(x, gain, bias)


def norm_backward(dout, cache, cls=None, n_rows=None):
    """dout (B, T, C) -> dx (B, T, C) and the grads {"g", "b"} (C,), plus with cls given
    {"cg", "cb"} (n_rows, C). The per-sequence gain g + cg[c] gets dout * xhat summed over that
    sequence's positions; g collects it from every sequence, cg[c] from the sequences of class c."""
    if cls is None:
        dx, dg, db = layernorm_backward(dout, cache)
        return dx, {"g": dg, "b": db}
    dgain = (dout * cache.xhat).sum(axis=1)  # (B, C) one sum per sequence
    dbias = dout.sum(axis=1)  # (B, C)
    return layernorm_dx(dout, cache), {"g": dgain.sum(axis=0), "b": dbias.sum(axis=0),  # (C,) every sequence
                                       "cg": scatter_sum(cls, dgain, n_rows), "cb": scatter_sum(cls, dbias, n_rows)}


# ----------------------------------------------------------------------------- one block
class BlockCache(NamedTuple):
    ln1: LayernormCache    # LN1 over the block input x (B, T, C)
    attn: AttentionCache   # attention over LN1(x); None when decoding with a KV cache
    do1: object            # (B, T, C) dropout mask of the attention branch, or None
    ln2: LayernormCache    # LN2 over x2 = x + attention branch (B, T, C)
    fc: LinearCache        # MLP up-projection: input (B, T, C), w_fc (C, 4C)
    gelu: GeluCache        # GELU over the up-projection (B, T, 4C)
    mlp_proj: LinearCache  # MLP down-projection: input (B, T, 4C), w_proj (4C, C)
    do2: object            # (B, T, C) dropout mask of the MLP branch, or None
    cls: object = None     # (B,) class row ids of class_norm, or None
    n_rows: int = None     # rows of the class_norm tables (n_class + 1), or None


def block_forward(x, bp, n_head, dropout=0.0, rng=None, kv=None, cls=None):
    """x: (B, T, C), bp: the block's params keyed by BLOCK_KEYS -> out (B, T, C), cache.
    The one block computation, for training and for sampling:
      kv=None: causal attention over the T positions of x; the cache serves block_backward.
      kv=a layer's KV cache (attention.new_kv_cache): x is (B, 1, C), the newest position only;
        attention.attention_step appends its key/value to kv and attends to every position
        so far. No backward follows (the cache's attn field is None).
    cls: (B,) class row ids for a class_norm prior (bp then also holds CLASS_NORM_KEYS), or None."""
    attn_params = {k: bp["attn." + k] for k in ATTN_KEYS}
    h1, c_ln1 = norm_forward(x, bp, "ln1", cls)  # (B, T, C)
    if kv is None:
        a, c_att = attention_forward(h1, attn_params, n_head)  # (B, T, C)
    else:
        a, c_att = attention_step(h1, attn_params, n_head, kv), None  # (B, 1, C)
    a, c_do1 = dropout_forward(a, dropout, rng)
    x2 = x + a  # (B, T, C)
    h2, c_ln2 = norm_forward(x2, bp, "ln2", cls)  # (B, T, C)
    f, c_fc = linear_forward(h2, bp["mlp.w_fc"], bp["mlp.b_fc"])  # (B, T, 4C)
    g, c_gelu = gelu_forward(f)  # (B, T, 4C)
    m, c_mp = linear_forward(g, bp["mlp.w_proj"], bp["mlp.b_proj"])  # (B, T, C)
    m, c_do2 = dropout_forward(m, dropout, rng)
    n_rows = None if cls is None else bp["ln1.cg"].shape[0]
    return x2 + m, BlockCache(c_ln1, c_att, c_do1, c_ln2, c_fc, c_gelu, c_mp, c_do2, cls, n_rows)


def block_backward(dout, cache):
    """dout: (B, T, C) -> dx (B, T, C), grads dict keyed by BLOCK_KEYS (and CLASS_NORM_KEYS).
    Each residual add passes its gradient unchanged to both the skip and the branch."""
    dm = dropout_backward(dout, cache.do2)
    dg, dw_mp, db_mp = linear_backward(dm, cache.mlp_proj)
    df = gelu_backward(dg, cache.gelu)
    dh2, dw_fc, db_fc = linear_backward(df, cache.fc)
    dx2_ln, dln2 = norm_backward(dh2, cache.ln2, cache.cls, cache.n_rows)
    dx2 = dout + dx2_ln  # skip + MLP branch
    da = dropout_backward(dx2, cache.do1)
    dh1, dattn = attention_backward(da, cache.attn)
    dx_ln, dln1 = norm_backward(dh1, cache.ln1, cache.cls, cache.n_rows)
    dx = dx2 + dx_ln  # skip + attention branch
    grads = {"mlp.w_fc": dw_fc, "mlp.b_fc": db_fc, "mlp.w_proj": dw_mp, "mlp.b_proj": db_mp}
    grads.update({"ln1." + k: v for k, v in dln1.items()})  # g, b (and cg, cb with class_norm)
    grads.update({"ln2." + k: v for k, v in dln2.items()})
    grads.update({"attn." + k: v for k, v in dattn.items()})
    return dx, grads


def block_params(params, l):
    """The params of block l keyed by BLOCK_KEYS, and CLASS_NORM_KEYS when present (views, no copies)."""
    return {k: params[f"h{l}.{k}"] for k in BLOCK_KEYS + CLASS_NORM_KEYS if f"h{l}.{k}" in params}


# ----------------------------------------------------------------------------- whole model
def forward_logits(params, cfg, idx, rng=None, speaker=None):
    """idx: (B, T) int token ids, T <= context -> logits (B, T, K), cache.
    rng (a host NumPy Generator) turns dropout on; None = evaluation.
    speaker: (B,) int speaker ids, required when cfg.speakers is set (None otherwise)."""
    B, T = idx.shape
    if T > cfg.context:
        raise ValueError(f"sequence of {T} positions is longer than the context ({cfg.context})")
    speaker = cfg.check_speaker(speaker, B)  # (B,) or None
    tok, c_tok = embedding_forward(idx, params["wte"])  # (B, T, C)
    x = tok + params["wpe"][:T]  # (B, T, C) learned absolute positions
    c_every = None
    if cfg.class_every:
        cls, c_every = embedding_forward(idx[:, :1], params["wte"])  # (B, 1, C) the prefix token's row
        x = x + cls  # (B, T, C) the same class vector at every position
    c_spk = None
    if speaker is not None:
        spk, c_spk = embedding_forward(speaker[:, None], params["wse"])  # (B, 1, C) the speaker's row
        x = x + spk  # (B, T, C) the same speaker vector at every position
    x, c_do = dropout_forward(x, cfg.dropout, rng)
    cls = cfg.class_ids(idx[:, 0]) if cfg.class_norm else None  # (B,) each sequence's class row, or None
    c_blocks = []
    for l in range(cfg.n_layer):
        x, c = block_forward(x, block_params(params, l), cfg.n_head, cfg.dropout, rng, cls=cls)  # (B, T, C)
        c_blocks.append(c)
    h, c_lnf = norm_forward(x, params, "ln_f", cls)  # (B, T, C)
    logits, c_head = linear_forward(h, params["head.w"], params["head.b"])  # (B, T, K)
    cache = {"tok": c_tok,  # EmbeddingCache: idx (B, T), wte's shape (V, C)
             "every": c_every,  # EmbeddingCache of the class row added at every position (idx (B, 1)), or None
             "speaker": c_spk,  # EmbeddingCache of the speaker row added at every position (ids (B, 1)), or None
             "do": c_do,  # (B, T, C) dropout mask of the embeddings, or None
             "blocks": c_blocks,  # [BlockCache] one per layer
             "lnf": c_lnf,  # LayernormCache of the final LayerNorm (B, T, C)
             "cls": cls,  # (B,) class rows of class_norm, or None
             "cls_rows": cfg.n_class + 1 if cfg.class_norm else None,  # rows of the class_norm tables
             "head": c_head,  # LinearCache of the LM head: input (B, T, C), head.w (C, K)
             "n_pos": params["wpe"].shape[0]}  # rows of wpe (context), for the shape of dwpe
    return logits, cache


def attention_maps(cache):
    """Attention probabilities of every layer from a forward_logits cache: list of (B, H, T, T)."""
    return [attention_probs(c.attn) for c in cache["blocks"]]


def split_sequence(seq):
    """seq: (B, T+1) prefix + codes -> model inputs (B, T) and targets (B, T) (all codes)."""
    return seq[:, :-1], seq[:, 1:]


def forward(params, cfg, seq, rng=None, speaker=None):
    """seq: (B, T+1) int, a prefix token then codes -> (loss in nats per code token, cache).
    speaker: (B,) int ids for a prior with speakers. The cache holds the logits (B, T, K) and
    dlogits for backward."""
    idx, targets = split_sequence(seq)  # (B, T), (B, T)
    logits, cache = forward_logits(params, cfg, idx, rng, speaker)  # (B, T, K)
    loss, dlogits = softmax_cross_entropy(logits, targets)
    cache["logits"], cache["dlogits"] = logits, dlogits  # (B, T, K) each
    return float(loss), cache


def backward(cache):
    """Gradients of forward()'s loss: a dict with the same keys and shapes as params."""
    grads = {}
    dh, grads["head.w"], grads["head.b"] = linear_backward(cache["dlogits"], cache["head"])  # (B, T, C)
    dx, g = norm_backward(dh, cache["lnf"], cache.get("cls"), cache.get("cls_rows"))  # (B, T, C)
    grads.update({"ln_f." + k: v for k, v in g.items()})
    for l in reversed(range(len(cache["blocks"]))):
        dx, g = block_backward(dx, cache["blocks"][l])  # (B, T, C)
        grads.update({f"h{l}.{k}": v for k, v in g.items()})
    dx = dropout_backward(dx, cache["do"])
    grads["wte"] = embedding_backward(dx, cache["tok"])  # (V, C)
    if cache["every"] is not None:  # the class row was also added at every position
        grads["wte"] += embedding_backward(dx.sum(axis=1, keepdims=True), cache["every"])  # (V, C)
    if cache.get("speaker") is not None:  # the speaker row was added at every position: dwse[s] = sum_t dx_t
        grads["wse"] = embedding_backward(dx.sum(axis=1, keepdims=True), cache["speaker"])  # (S, C)
    T = dx.shape[1]
    dwpe = xp.zeros((cache["n_pos"], dx.shape[-1]), dtype=dx.dtype)  # (context, C)
    dwpe[:T] = dx.sum(axis=0)  # every sequence in the batch used the same position rows
    grads["wpe"] = dwpe
    return grads


def token_nll(logits, targets):
    """logits (B, T, K), targets (B, T) -> negative log-likelihood per position (B, T), nats."""
    _, s, zmax = stable_exp(logits)  # (B, T, K), (B, T, 1), (B, T, 1)
    z_t = xp.take_along_axis(logits, targets[..., None], axis=-1) - zmax  # (B, T, 1) the target's shifted logit
    return (xp.log(s) - z_t)[..., 0]  # (B, T)  log sum exp(z) - z_t, both less the row max


def mean_nll(params, cfg, seqs, batch_size=64, speaker=None):
    """Mean NLL per code token (nats) over seqs (N, T+1), and the per-position mean (T,).
    speaker: (N,) int ids for a prior with speakers."""
    total, per_pos, n = 0.0, 0.0, 0
    for i in range(0, seqs.shape[0], batch_size):
        s = asarray(seqs[i:i + batch_size])  # (b, T+1)
        idx, targets = split_sequence(s)
        spk = None if speaker is None else asarray(speaker[i:i + batch_size])  # (b,)
        logits, _ = forward_logits(params, cfg, idx, speaker=spk)  # (b, T, K)
        nll = token_nll(logits, targets)  # (b, T)
        per_pos = per_pos + nll.sum(axis=0)
        total += float(nll.sum())
        n += s.shape[0]
    per_pos = per_pos / n  # (T,)
    return total / (n * per_pos.size), per_pos


def class_log_likelihood(params, cfg, grids, batch_size=64, speaker=None):
    """log p(grid | class c) of every grid under a class-conditional prior, for every class c.

    grids: (N, h, w) int codes -> (N, n_class) float64 host array, nats. Row n, column c is
        log p(grid_n | c) = - sum_t NLL(z_t | c, z_<t)
    over the grid's h*w codes read in cfg.order (the same sequences make_sequences builds for
    training, with class c as the prefix). One forward per class per batch of grids.
    speaker: (N,) int ids of the grids' speakers, for a prior with speakers."""
    if cfg.cond != "class":
        raise ValueError("class_log_likelihood needs a class-conditional prior (cond='class')")
    N = len(grids)
    ll = xp.zeros((N, cfg.n_class), dtype="float64")  # (N, n_class)
    for i in range(0, N, batch_size):
        g = grids[i:i + batch_size]  # (b, h, w)
        for c in range(cfg.n_class):
            seq = asarray(make_sequences(g, [c] * len(g), cfg))  # (b, 1 + T) class c, then the codes
            idx, targets = split_sequence(seq)  # (b, T), (b, T)
            spk = None if speaker is None else asarray(speaker[i:i + batch_size])  # (b,)
            logits, _ = forward_logits(params, cfg, idx, speaker=spk)  # (b, T, K)
            ll[i:i + len(g), c] = -token_nll(logits, targets).astype("float64").sum(axis=1)  # (b,)
    return to_numpy(ll)  # (N, n_class)


# ----------------------------------------------------------------------------- data and persistence
def make_sequences(tokens, digits, cfg):
    """tokens (N, H, W) codes, digits (N,) -> int64 (N, 1 + H*W) = prefix + codes in cfg.order."""
    codes = cfg.to_sequence(to_numpy(tokens))  # (N, T)
    if codes.shape[1] != cfg.context:
        raise ValueError(f"token grids hold {codes.shape[1]} codes but the prior's context is {cfg.context}")
    prefix = cfg.prefix(digits if cfg.cond == "class" else None, n=len(codes))  # (N,)
    return to_numpy(xp.concatenate([prefix[:, None], asarray(codes, dtype="int64")], axis=1))  # (N, 1 + T) host


def load_prior(ckpt):
    """Load a prior checkpoint (prior.npz) -> (params on the current backend, GPTConfig, meta dict)."""
    ck = checkpoint.load(ckpt)
    if "model" not in ck["config"]:
        raise ValueError(f"checkpoint {ckpt} is not a transformer prior (no 'model' config)")
    cfg = GPTConfig.from_dict(ck["config"]["model"])
    return {k: asarray(v) for k, v in ck["params"].items()}, cfg, ck["meta"]
