"""Shared plumbing for the examples: flags, progress bars, results tables, output folders.

    >>> p = make_parser("demo"); args = p.parse_args(["--seed", "1"]); args.seed
    1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Iterable, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import tinygrad_rnn as tr  # noqa: E402


def make_parser(description: str, epochs: int = 1, out: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every example shares: --device --seed --epochs --out --quiet."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (needs the [cuda] extra and a GPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, initialisation, dropout)")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training data")
    p.add_argument("--out", default=out or os.path.join("runs", description.split()[0].lower().strip(":")),
                   help="folder for checkpoints, plots and results.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def setup(args: argparse.Namespace) -> str:
    """Seed everything, check the device, create the output folder; returns the folder."""
    np.random.seed(args.seed)
    tr.manual_seed(args.seed)
    if args.device != "cpu" and not tr.cuda.is_available():
        raise SystemExit(f"--device {args.device}: {tr.cuda.unavailable_reason()}")
    os.makedirs(args.out, exist_ok=True)
    return args.out


class Progress:
    """A minimal progress bar on stderr (tqdm when installed), with a live postfix."""

    def __init__(self, total: int, desc: str = "", disable: bool = False):
        self.total, self.desc, self.disable, self.n, self.t0 = total, desc, disable, 0, time.perf_counter()
        self.postfix = ""
        self._bar = None
        if not disable:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix_str(self.postfix, refresh=False)
        elif self.n == self.total or self.n % max(1, self.total // 20) == 0:
            rate = self.n / max(time.perf_counter() - self.t0, 1e-9)
            print(f"\r{self.desc} {self.n}/{self.total} ({rate:.1f}/s) {self.postfix}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.disable:
            print(file=sys.stderr)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str], title: str | None = None) -> str:
    """Print (and return) a plain-text table with aligned columns."""
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = ([title] if title else []) + [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def write_results(folder: str, results: dict[str, Any]) -> str:
    """Write results.json atomically into the output folder."""
    path = os.path.join(folder, "results.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=float)
    os.replace(tmp, path)
    return path


def save_plot(path: str, series: Iterable[tuple[str, Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
              title: str, logy: bool = False) -> str | None:
    """Line plot to PNG with matplotlib (the [examples] extra); returns None with a note if it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: skipped {path}; pip install -e '.[examples]')")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xs, ys in series:
        ax.plot(list(xs), list(ys), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
