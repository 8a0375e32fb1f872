"""Many speakers from few: an AudioMNIST-layout folder made from FSDD, for the many-speaker regime.

FSDD has 6 speakers; AudioMNIST (the paper's data) has 60, and a model tuned on 6 voices can fail
on 60. With no other recordings here, this makes a stand-in: each FSDD speaker is split into
``--voices`` voices (default 10, so 60 speakers), each voice taking every V-th take of its speaker,
and every clip of a voice is changed the same way:

  speed   resampled as if played at f times the speed (pitch and formants x f, duration / f), with
          f drawn log-uniformly from [0.8, 1.25] per voice: the change a shorter or longer vocal
          tract and a higher or lower voice make together (not separately: one knob)
  tilt    a first-order filter y[n] = x[n] - a x[n-1], a uniform in [-0.5, 0.5] per voice: a
          brighter (a > 0) or darker (a < 0) recording chain
  gain    the peak set to a level drawn per voice in [-12, -1] dB
  length  placed at a random offset inside silence of a random total length in [0.7, 3.5] s per
          clip (the window of the features is 1.024 s: longer clips are centred on their sound),
          with a faint noise floor (-60 dB under the peak) so the padding is not digital zero

and written at ``--sr`` Hz (default 16 kHz) as ``OUT/NN/{digit}_{NN}_{take}.wav`` with no metadata
file. The AudioMNIST layout's official split holds out 20 % of the speakers (12 of 60), so a model
trained on this folder is tested on voices it has not heard. They are not new people: a held-out
voice is a changed copy of one of the 6 speakers, whose other voices are in the training split.
So this measures robustness to many and unseen voices of a kind, not the real thing; a recipe
that fails here will fail there too.

    python benchmarks/many_speakers.py --data $MINIVQ_FSDD --out ~/data/fsdd60
    python -m minivq.pipeline --data ~/data/fsdd60 --out out/fsdd60

``OUT/voices.json`` lists each voice's source speaker and its speed, tilt and gain.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivq import audio, layouts  # noqa: E402

SPEED = (0.8, 1.25)      # per-voice speed/pitch factor range (log-uniform)
TILT = (-0.5, 0.5)       # per-voice first-order filter coefficient range
GAIN_DB = (-12.0, -1.0)  # per-voice peak level range
LENGTH_S = (0.7, 3.5)    # per-clip total length range in seconds
NOISE_DB = -60.0         # noise floor under the peak


def voices_of(speakers, n_voices, seed=0):
    """-> [dict(id, source, speed, tilt, gain_db)] for n_voices voices of each speaker (sorted),
    ids "01", "02", ... in that order; the draws depend on (seed, speaker index, voice) only."""
    out = []
    for i, s in enumerate(sorted(speakers)):
        for v in range(n_voices):
            g = np.random.default_rng([seed, i, v])
            speed = float(np.exp(g.uniform(np.log(SPEED[0]), np.log(SPEED[1]))))
            speed = round(speed * 8000 / 50) * 50 / 8000  # 8 kHz x speed a multiple of 50 Hz: a short polyphase filter
            out.append({"id": f"{len(out) + 1:02d}", "source": s, "voice": v, "speed": speed,
                        "tilt": float(g.uniform(*TILT)), "gain_db": float(g.uniform(*GAIN_DB))})
    return out


def change(wave, voice, sr_out, rng):
    """(N,) 8 kHz recording -> (M,) the voice's version at sr_out Hz, padded to a random length."""
    x = audio.resample(wave.astype(np.float64), int(round(8000 * voice["speed"])), 8000)  # speed x f
    x = lfilter([1.0, -voice["tilt"]], [1.0], x)  # (N / f,) spectral tilt
    x = audio.resample(x, 8000, sr_out)  # (N / f * sr_out / 8000,)
    peak = float(np.max(np.abs(x))) or 1.0
    x = x * (10 ** (voice["gain_db"] / 20) / peak)
    n = max(int(round(rng.uniform(*LENGTH_S) * sr_out)), len(x))
    start = int(rng.integers(0, n - len(x) + 1))
    y = rng.standard_normal(n) * 10 ** ((voice["gain_db"] + NOISE_DB) / 20)  # (n,) the noise floor
    y[start:start + len(x)] += x
    return y.astype(np.float32)


def build(data, out, n_voices=10, sr=16000, seed=0, max_per_digit=None, force=False, progress=True):
    """Write the folder (see the module docstring) -> summary dict."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} is not empty (add --force to write into it)")
    listing = layouts.scan(data)
    if listing.layout != "fsdd":
        raise ValueError(f"{data} is an {listing.layout} folder; this splits FSDD's speakers into voices")
    voices = voices_of({c.speaker for c in listing.clips}, n_voices, seed)
    by = {(v["source"], v["voice"]): v for v in voices}
    clips = sorted(listing.clips, key=lambda c: (c.speaker, c.digit, c.take))
    kept, count = [], {}
    for c in clips:
        v = by[c.speaker, c.take % n_voices]
        key = (v["id"], c.digit)
        if max_per_digit is not None and count.get(key, 0) >= max_per_digit:
            continue
        count[key] = count.get(key, 0) + 1
        kept.append((c, v))
    lengths = []
    for i, (c, v) in enumerate(kept):
        rng = np.random.default_rng([seed, 7, i])
        y = change(audio.load_wav(c.path, 8000), v, sr, rng)
        audio.save_wav(out / v["id"] / f"{c.digit}_{v['id']}_{c.take // n_voices}.wav", y, sr)
        lengths.append(len(y) / sr)
        if progress and (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(kept)} clips", file=sys.stderr, flush=True)
    (out / "voices.json").write_text(json.dumps(voices, indent=1))
    return {"clips": len(kept), "speakers": len(voices), "sr": sr,
            "seconds": [round(min(lengths), 2), round(max(lengths), 2)] if lengths else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="FSDD folder")
    p.add_argument("--out", required=True, help="folder to write (AudioMNIST layout)")
    p.add_argument("--voices", type=int, default=10, help="voices per FSDD speaker (default 10: 60 speakers)")
    p.add_argument("--sr", type=int, default=16000, help="sample rate of the files written (default 16000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-per-digit", type=int, default=None, help="at most N clips per voice and digit")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    a = p.parse_args(argv)
    try:
        if a.voices < 1 or a.sr < 8000 or (a.max_per_digit is not None and a.max_per_digit < 1):
            raise ValueError("--voices and --max-per-digit must be >= 1 and --sr >= 8000")
        s = build(a.data, a.out, a.voices, a.sr, a.seed, a.max_per_digit, a.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {s['clips']} clips of {s['speakers']} speakers at {s['sr']} Hz, {s['seconds'][0]}-"
          f"{s['seconds'][1]} s, to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
