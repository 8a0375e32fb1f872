"""Judging sound the pipeline made: back to audio, features again, classifier verdicts,
distribution metrics. Host-side glue shared by bundle.py, pipeline.py and lesson 08 (the
figures of these verdicts are drawn in plots.py).

Size letters: B clips, M mel bands, T frames, E embedding size.

Every judged clip takes the path a real recording takes: log-mel -> audio (mel inversion +
Griffin-Lim) -> prepare (trim, peak-normalise, centre) -> log-mel -> classifier. So a
generated digit is scored on the sound a listener would hear, not on the decoder's
spectrogram, and real/round-trip/reconstructed/generated accuracies are comparable.
"""
import numpy as np

from minivq import audio, metrics
from minivq import classifier as C
from minivq import listener as Li
from minivq.backend import to_numpy
from minivq.transformer import NATS_PER_BIT, class_log_likelihood


def to_audio(logmel, cfg, n_iter=64, seed=0, batch=100):
    """(B, M, T) log-mel -> (B, n_samples) float32 waves, in batches to bound memory."""
    logmel = np.asarray(logmel, dtype=np.float32)
    waves = [audio.mel_to_audio(logmel[i:i + batch], cfg, n_iter=n_iter, seed=seed + i)
             for i in range(0, len(logmel), batch)]
    return np.concatenate(waves) if waves else np.zeros((0, cfg.n_samples), np.float32)  # (B, N)


def featurise(waves, cfg):
    """(B, n) waves -> (B, M, T) log-mel exactly as a recording is featurised (prepare + log_mel)."""
    return np.stack([audio.log_mel(audio.prepare(w, cfg), cfg) for w in waves]).astype(np.float32)


def round_trip(logmel, cfg, n_iter=64, seed=0):
    """log-mel -> audio -> log-mel: what the classifier hears. Returns (waves, log-mel)."""
    waves = to_audio(logmel, cfg, n_iter, seed)
    return waves, featurise(waves, cfg)


def judge(clf, logmel, want=None):
    """Classify raw log-mels (B, M, T) with clf = (params, cfg, norm).

    Returns dict: probs (B, 10), pred (B,), confidence (B,) = max prob, embed (B, E), and with
    ``want`` (requested digits) also accuracy, confusion (10, 10) and mean prob of the wanted digit."""
    params, _, norm = clf
    probs = to_numpy(C.classify(params, norm, logmel))  # (B, 10)
    emb = to_numpy(C.classify_embed(params, norm, logmel))  # (B, E)
    return _verdict(probs, emb, want)


def listen(listener, waves, sr, want=None):
    """The second judge (minivq.listener: MFCCs of the waveform, a 1-D CNN trained on recordings
    only) on waves (B, N) at ``sr`` Hz; the same dict as judge(). Independent of the first judge
    by construction: it never sees the models' log-mels, their trimming or their padding."""
    probs, emb = Li.listen(listener, waves, sr)  # (B, 10), (B, E)
    return _verdict(probs, emb, want)


def _verdict(probs, emb, want):
    """probs (B, 10), emb (B, E) -> the verdict dict of judge()/listen()."""
    pred = probs.argmax(axis=1)  # (B,)
    out = {"probs": probs, "pred": pred, "confidence": probs.max(axis=1), "embed": emb}
    if want is not None:
        want = np.asarray(want)
        out["accuracy"] = metrics.accuracy(pred, want)
        out["confusion"] = metrics.confusion_matrix(want, pred, num_classes=probs.shape[1])
        out["p_wanted"] = float(probs[np.arange(len(want)), want].mean())
    return out


def summarise(verdict):
    """The JSON-ready part of a judge() verdict: n, mean confidence and, when it had requested
    digits, accuracy, mean probability of the wanted digit and the confusion matrix as lists."""
    s = {"n": int(len(verdict["pred"])), "mean_confidence": float(np.mean(verdict["confidence"]))}
    if "accuracy" in verdict:
        s.update(accuracy=float(verdict["accuracy"]), p_wanted=verdict["p_wanted"],
                 confusion=verdict["confusion"].tolist())
    return s


def entropy_bits(counts):
    """Shannon entropy (bits) of a histogram; log2(10) = 3.32 for 10 equally used digits."""
    p = np.asarray(counts, dtype=np.float64)
    p = p / max(p.sum(), 1)
    p = p[p > 0]
    return float(abs((p * np.log2(p)).sum()))  # abs: no "-0.0" for a single used digit


def distribution_metrics(real_emb, fake_emb, seed=0):
    """TopP&R, PRDC (k=5) and Frechet distance between two embedding sets (E <= 32, so no
    projection). Metrics that need more points than given are reported as None with the reason."""
    res = {"n_real": len(real_emb), "n_fake": len(fake_emb)}
    try:
        r = metrics.top_pr(real_emb, fake_emb, rng=np.random.RandomState(seed))
        res.update(fidelity=r.fidelity, diversity=r.diversity, top_f1=r.top_f1)
    except ValueError as e:
        res.update(fidelity=None, diversity=None, top_f1=None, top_pr_note=str(e))
    try:
        res.update(metrics.prdc(real_emb, fake_emb, k=5))
    except ValueError as e:
        res["prdc_note"] = str(e)
    res["frechet"] = metrics.frechet_distance(real_emb, fake_emb) if min(len(real_emb), len(fake_emb)) > 1 else None
    return res


def latent_top_pr(codebook, real_tokens, fake_tokens, seed=0):
    """TopP&R between two sets of token grids in the VQ latent space: each grid becomes its
    code vectors codebook[tokens] flattened (h*w*D dims), projected to 32-d by top_pr's seeded
    Gaussian map. None (with the reason) when there are too few grids."""
    cb = to_numpy(codebook)
    real = cb[np.asarray(real_tokens)].reshape(len(real_tokens), -1)  # (N, h*w*D)
    fake = cb[np.asarray(fake_tokens)].reshape(len(fake_tokens), -1)  # (M, h*w*D)
    try:
        r = metrics.top_pr(real, fake, rng=np.random.RandomState(seed))
        return {"fidelity": r.fidelity, "diversity": r.diversity, "top_f1": r.top_f1}
    except ValueError as e:
        return {"fidelity": None, "diversity": None, "top_f1": None, "note": str(e)}


def prior_as_classifier(prior, tokens, digits, batch_size=64):
    """How much a class-conditional prior's likelihood depends on the digit: the prior used as
    a classifier of token grids.

    prior: (params, GPTConfig[, meta]); tokens (N, h, w) codes; digits (N,) their true digits.
    With a uniform prior over the classes present, Bayes gives p(c | g) = p(g | c) / sum_c' p(g | c').
    Returns a JSON-ready dict:
      accuracy           fraction with argmax over all n_class classes of log p(g | c) == true digit
      per_digit          that accuracy for each digit 0..n_class-1 (None where a digit has no grids)
      mi_bits_lower_bound  H(C) - E[-log2 p(c_true | g)], bits per grid: a lower bound on the
                         mutual information I(digit; grid) under the data's joint distribution,
                         because I = H(C) - H(C | G) and the cross-entropy E[-log2 q(c | g)] of any
                         posterior q (here the prior's Bayes posterior) is >= the true H(C | G);
                         estimated on these N grids (at most H(C) = log2 10 = 3.32 bits; negative
                         when the posterior is confidently wrong, which bounds nothing since I >= 0)
      h_class_bits       H(C) of the digits given (empirical)
      cross_entropy_bits E[-log2 p(c_true | g)]
      mean_margin_bits   mean of log2 p(g | true) - max over the other n_class - 1 classes of log2 p(g | c)
      n                  number of grids"""
    params, cfg = prior[0], prior[1]
    digits = np.asarray(to_numpy(digits), dtype=np.int64).reshape(-1)  # (N,)
    if len(digits) != len(tokens):
        raise ValueError(f"prior_as_classifier: {len(tokens)} token grids but {len(digits)} digits")
    if len(digits) == 0:
        raise ValueError("prior_as_classifier: no token grids given")
    if digits.min() < 0 or digits.max() >= cfg.n_class:
        raise ValueError(f"prior_as_classifier: digits must lie in 0..{cfg.n_class - 1}")
    ll = class_log_likelihood(params, cfg, tokens, batch_size)  # (N, n_class) nats
    rows = np.arange(len(digits))
    pred = ll.argmax(axis=1)  # (N,) over all n_class classes
    other = ll.copy()
    other[rows, digits] = -np.inf
    margin = (ll[rows, digits] - other.max(axis=1)) / NATS_PER_BIT  # (N,) bits
    present = np.unique(digits)  # the classes the uniform prior of the posterior runs over
    lp = ll[:, present] - ll[:, present].max(axis=1, keepdims=True)  # (N, P)
    lp = lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))  # (N, P) log p(c | g)
    ce_bits = float(-lp[rows, np.searchsorted(present, digits)].mean() / NATS_PER_BIT)
    counts = np.bincount(digits, minlength=cfg.n_class)
    return {"n": int(len(digits)), "accuracy": float((pred == digits).mean()),
            "per_digit": [float((pred[digits == d] == d).mean()) if counts[d] else None for d in range(cfg.n_class)],
            "mi_bits_lower_bound": entropy_bits(counts) - ce_bits, "h_class_bits": entropy_bits(counts),
            "cross_entropy_bits": ce_bits, "mean_margin_bits": float(margin.mean())}


def judge_speaker(clf, logmel, want=None):
    """The speaker classifier (a classifier whose ClassifierConfig.labels name the speakers) on
    raw log-mels (B, M, T): judge()'s dict, plus "names" (B,) the heard speakers' names. ``want``:
    (B,) requested speaker names; accuracy and confusion then count the heard name == the requested
    one (rows and columns of the confusion in the order of the classifier's labels)."""
    labels = list(clf[1].labels)
    if not labels:
        raise ValueError("this classifier has no speaker names (ClassifierConfig.labels); train one with "
                         "python -m minivq.train classifier --target speaker")
    ids = None
    if want is not None:
        index = {s: i for i, s in enumerate(labels)}
        unknown = sorted({str(s) for s in want} - set(index))
        if unknown:
            raise ValueError(f"the speaker classifier does not know {unknown}; it knows {', '.join(labels)}")
        ids = np.array([index[str(s)] for s in want], dtype=np.int64)  # (B,)
    v = judge(clf, logmel, want=ids)
    v["names"] = np.array(labels)[v["pred"]]  # (B,)
    return v
