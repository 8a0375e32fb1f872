"""Training entry point: python -m minivq.train {vqvae,prior,classifier,listener} [options]

Each model's trainer lives in its own module (train_vqvae, train_prior, train_classifier)
exposing add_arguments(parser) and run(args) -> exit code; this file only dispatches.
"""
import argparse
import importlib
import sys

from minivq import cli

TRAINERS = {
    "vqvae": ("minivq.train_vqvae", "train the VQ-VAE on log-mel spectrograms"),
    "prior": ("minivq.train_prior", "train the transformer prior on VQ-VAE tokens"),
    "classifier": ("minivq.train_classifier", "train the digit classifier on log-mels"),
    "listener": ("minivq.train_listener", "train the second judge (MFCCs of the waveform) on recordings"),
}


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m minivq.train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    modules = {}
    for name, (modname, help_) in TRAINERS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        p = sub.add_parser(name, help=help_, description=help_,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        modules[name] = mod
    try:
        args = parser.parse_args(argv)  # a bad option is a cli.UsageError (a ValueError)
        return modules[args.model].run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # trainers catch their own; this one came while loading data
        print(str(e) or "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
