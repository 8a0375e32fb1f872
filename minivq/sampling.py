"""Autoregressive sampling from the transformer prior, with a KV cache.

Size letters: N sequences sampled at once, T positions, C model width, K codebook size.

Decoding one token at a time, position t only needs its own query against the keys and
values of positions <= t. Those keys/values never change once computed, so each layer
keeps them in a cache (transformer.block_forward with kv=, which calls
attention.attention_step) and a new token costs O(T) work instead of re-running the whole
O(T^2) prefix. ``use_cache=False`` re-runs the full forward at every step; both paths draw
the same uniforms, so for one seed they give the same tokens.

Filtering (applied in this order to the K code logits of each step):
    temperature  logits / temperature (lower = greedier)
    top_k        keep the k largest logits
    top_p        keep the smallest set of tokens whose probability sums to >= p (nucleus)
A token is then drawn by inverse CDF with one host-side uniform per row, so the same seed
gives the same tokens on CPU and GPU.
"""
from minivq import cli
from minivq.attention import new_kv_cache
from minivq.backend import asarray, rng as host_rng, to_numpy, xp
from minivq.layers import softmax
from minivq.transformer import block_forward, block_params, forward_logits, norm_forward


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """logits: (N, K) -> probabilities (N, K) after temperature, top-k and top-p."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = logits / temperature  # (N, K) fresh array
    K = z.shape[-1]
    if top_k is not None and 0 < top_k < K:
        # exactly k survive, even with ties at the k-th value (a threshold test would keep them all)
        drop = xp.argpartition(z, K - top_k, axis=-1)[:, :K - top_k]  # (N, K-k) ids of the smallest
        z[xp.arange(z.shape[0])[:, None], drop] = -xp.inf
    p = softmax(z, out=z)  # (N, K) in place: z is this function's own copy
    if top_p is not None and top_p < 1.0:
        order = xp.argsort(-p, axis=-1)  # (N, K) most probable first
        ps = xp.take_along_axis(p, order, axis=-1)  # (N, K)
        before = xp.cumsum(ps, axis=-1) - ps  # probability mass strictly before each token
        inverse = xp.argsort(order, axis=-1)  # (N, K) sorted rank of each token
        drop = xp.take_along_axis(before >= top_p, inverse, axis=-1)  # (N, K); the top token stays
        p[drop] = 0
        p /= p.sum(axis=-1, keepdims=True)
    return p


def draw(p, u):
    """Inverse-CDF draw: p (N, K) probabilities, u (N,) uniforms in [0, 1) -> (N,) token ids."""
    cdf = xp.cumsum(p, axis=-1)  # (N, K)
    tok = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)  # (N,) first index with cdf >= u
    return xp.minimum(tok, p.shape[-1] - 1)


def new_caches(cfg, n, dtype="float32"):
    """One KV cache per layer for n sequences of up to cfg.context positions."""
    return [new_kv_cache(n, cfg.n_head, cfg.context, cfg.d_model, dtype) for _ in range(cfg.n_layer)]


def forward_step(params, cfg, tok, caches, speaker=None):
    """One decoding step: tok (N,) the tokens at the next position -> logits (N, K) for the
    position after it. Appends to every layer's KV cache (the same math as forward_logits).
    speaker: (N,) int ids for a prior with speakers (the same ids at every step)."""
    t = caches[0]["n"]
    e = params["wte"][tok][:, None]  # (N, 1, C)
    if cfg.class_norm and t == 0:  # tok is the class token: its class_norm row serves every later step
        caches[0]["cls"] = cfg.class_ids(tok)  # (N,)
    cls = caches[0]["cls"] if cfg.class_norm else None
    if cfg.class_every and t == 0:  # tok is the class token: keep its embedding for every later position
        caches[0]["class"] = e
    x = e + params["wpe"][t]  # (N, 1, C)
    if cfg.class_every:
        x = x + caches[0]["class"]
    if cfg.speakers:
        x = x + params["wse"][cfg.check_speaker(speaker, len(tok))][:, None]  # (N, 1, C) the speaker's row
    for l in range(cfg.n_layer):
        x, _ = block_forward(x, block_params(params, l), cfg.n_head, kv=caches[l], cls=cls)  # (N, 1, C)
    h, _ = norm_forward(x, params, "ln_f", cls)
    return (h @ params["head.w"] + params["head.b"])[:, 0]  # (N, K)


def sample(params, cfg, n, cond=None, temperature=1.0, top_k=None, top_p=None, seed=0,
           n_tokens=None, use_cache=True, guide=None, guidance=1.0, speaker=None):
    """Sample n code sequences -> NumPy int64 (n, n_tokens) (default n_tokens = cfg.context,
    i.e. 256 = one 16 x 16 grid in cfg.order; cfg.to_grid(codes, 16, 16) gives the grids).

    cond: None for an unconditional prior (cfg.cond == 'none'), else the digits: an int
    (all n the same) or a length-n sequence. Only code tokens 0..K-1 are ever emitted.

    Classifier-free guidance, guidance = s != 1: each step samples from
        logits = logits_u + s * (logits_cond - logits_u),
    i.e. p ~ p_u * (p_cond / p_u)^s: s > 1 sharpens what the class token adds over the
    unconditional model (Ho & Salimans 2022, applied to an autoregressive prior). logits_u comes
      - from guide=(params_u, cfg_u), a separate unconditional prior over the same codes (each
        model keeps its own KV cache; each step costs two forward steps), or
      - with guide=None, from the same prior fed its null class (cfg.null_class): the conditional
        and the null-class sequences run as one batch of 2n, one forward step per token.
    A conditional prior with neither ignores guidance (it samples unguided).

    speaker: for a prior with speakers (cfg.speakers), the voice: an int id or a name (all n
    the same) or a length-n sequence of ids or names (cfg.speaker_ids maps names). Self-guidance
    keeps the speaker in the null-class rows, so it sharpens the digit given the voice; a separate
    guide (an unconditional prior without speakers) sees no speaker."""
    cli.check_sampling(temperature, top_k, top_p, guidance)
    cli.positive_int.check("n", n)
    n_tokens = cfg.context if n_tokens is None else int(n_tokens)
    if not 1 <= n_tokens <= cfg.context:
        raise ValueError(f"n_tokens must be in 1..{cfg.context}, got {n_tokens}")
    if cond is not None:
        cond = to_numpy(xp.asarray(cond)).reshape(-1)
        if cond.size == 1:
            cond = cond.repeat(n)
        if cond.size != n:
            raise ValueError(f"cond has {cond.size} digits for n={n} samples")
    prefix = cfg.prefix(cond, n=n)  # (n,)
    if speaker is not None and cfg.speakers:
        spk = [speaker] if isinstance(speaker, (str, int)) or getattr(speaker, "ndim", 1) == 0 else list(speaker)
        if all(isinstance(s, str) for s in spk):
            spk = cfg.speaker_ids(spk)
        spk = xp.asarray(spk, dtype="int64").reshape(-1)  # (1,) or (n,)
        speaker = cfg.check_speaker(spk.repeat(n) if spk.size == 1 else spk, n)  # (n,)
    else:
        speaker = cfg.check_speaker(speaker, n)  # None, or the error for a prior without speakers
    rng = host_rng(seed)
    self_guided = guide is None and guidance != 1.0 and cfg.null_class
    rows = 2 * n if self_guided else n  # the null-class copies ride in the same batch
    out = xp.zeros((rows, n_tokens + 1), dtype="int64")  # (rows, 1 + n_tokens) prefix then codes
    out[:n, 0] = prefix
    if self_guided:
        out[n:, 0] = cfg.null_token
    caches = new_caches(cfg, rows, params["wte"].dtype) if use_cache else None
    spk_rows = None if speaker is None else (xp.concatenate([speaker, speaker]) if self_guided else speaker)  # (rows,)
    guided = guide is not None and guidance != 1.0
    if guided:
        params_u, cfg_u = guide
        if cfg_u.cond != "none" or cfg_u.n_code != cfg.n_code or cfg_u.context < n_tokens or cfg_u.order != cfg.order:
            raise ValueError("guide must be an unconditional prior (cond='none') over the same codes, context "
                             "and grid order")
        out_u = out.copy()
        out_u[:, 0] = cfg_u.prefix(None, n=n)
        caches_u = new_caches(cfg_u, n, params_u["wte"].dtype) if use_cache else None
    for t in range(n_tokens):
        if use_cache:
            logits = forward_step(params, cfg, out[:, t], caches, spk_rows)  # (rows, K)
        else:
            logits = forward_logits(params, cfg, out[:, :t + 1], speaker=spk_rows)[0][:, -1]  # (rows, K)
        if self_guided:
            logits, lu = logits[:n], logits[n:]  # (n, K) each: with the digit, with the null class
            logits = lu + guidance * (logits - lu)
        elif guided:
            if use_cache:
                lu = forward_step(params_u, cfg_u, out_u[:, t], caches_u)  # (n, K)
            else:
                lu = forward_logits(params_u, cfg_u, out_u[:, :t + 1])[0][:, -1]  # (n, K)
            logits = lu + guidance * (logits - lu)
        p = filter_logits(logits, temperature, top_k, top_p)  # (n, K)
        u = asarray(rng.random(n), dtype=p.dtype)  # (n,)
        tok = draw(p, u)  # (n,)
        out[:n, t + 1] = tok
        if self_guided:
            out[n:, t + 1] = tok  # the null-class copy continues the same codes
        if guided:
            out_u[:, t + 1] = tok
    return to_numpy(out[:n, 1:])  # (n, n_tokens)
