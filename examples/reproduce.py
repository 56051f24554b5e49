"""reproduce: rerun the README's results table and compare with the numbers printed there.

Every row of the README's results table is one command below (seed and flags spelled out) and
the numbers it must give. ``--check`` reruns the quick rows (50 s of CPU time in all: about a minute
on idle cores) and exits 1 if any number is outside its tolerance; ``--all`` adds the long rows
(the char LM, the PTB models, the sentiment LSTMs: over an hour); ``--list`` prints the commands.

    python examples/reproduce.py --check
    python examples/reproduce.py --list
    python examples/reproduce.py --only adding_short vanishing

Tolerances: most runs are bit-for-bit repeatable on one machine, but float32 training is
chaotic enough that another BLAS kernel (OpenBLAS picks one per CPU; ``OPENBLAS_CORETYPE``
overrides it) ends on other numbers. Measured on this project's machine, SkylakeX kernel vs
``OPENBLAS_CORETYPE=Haswell``: the adding problem's ReLU networks differ by up to 2x at the
short setting (np-RNN 0.013 vs 0.0065), the LSTM by 1 %, and the float32 recurrent kernels' new
summation order moved their *final* MSE by up to 6x while their best MSE along the run stayed
within the tolerance: the ReLU networks are checked on that best value. The tolerances below cover
that spread; a real regression (a model that stops learning) is far outside them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Check:
    """One number from results.json: ``get(results)`` compared with ``want`` by ``how``."""

    label: str
    get: Callable[[dict], Any]
    want: Any
    how: str = "rel"  # "rel": |got - want| <= tol * |want|; "abs"; "factor": within want / tol .. want * tol; "eq"
    tol: float = 0.0

    def passes(self, got: Any) -> bool:
        if self.how == "eq":
            return got == self.want
        if not isinstance(got, (int, float)) or not math.isfinite(got):
            return False
        if self.how == "rel":
            return abs(got - self.want) <= self.tol * abs(self.want)
        if self.how == "abs":
            return abs(got - self.want) <= self.tol
        if self.how == "factor":
            return got > 0 and self.want / self.tol <= got <= self.want * self.tol
        if self.how == "max":
            return got <= self.want
        if self.how == "min":
            return got >= self.want
        raise ValueError(f"unknown comparison {self.how!r}")

    def describe(self) -> str:
        return {"rel": f"{self.want:.4g} ± {100 * self.tol:g} %", "abs": f"{self.want:.4g} ± {self.tol:g}",
                "factor": f"{self.want:.3g} (x/÷ {self.tol:g})", "eq": repr(self.want), "max": f"<= {self.want:g}",
                "min": f">= {self.want:g}"}[self.how]


@dataclass
class Entry:
    name: str
    argv: list[str]
    checks: list[Check]
    quick: bool
    minutes: str  # CPU minutes measured on the project's machine (one thread: the wall time on idle cores), as in the README
    note: str = ""
    extra: list[str] = field(default_factory=list)

    def command(self) -> str:
        return "python examples/" + " ".join(self.argv)


def _run(model: str, T: int) -> Callable[[dict], float]:
    return lambda r: next(x["test_mse"] for x in r["runs"] if x["model"] == model and x["T"] == T)


def _best(model: str, T: int) -> Callable[[dict], float]:
    """The best test MSE along the run: the ReLU networks' *final* MSE sits on a spiky stretch of
    their curve and moves with any change of float32 rounding (a BLAS kernel, a kernel's summation
    order), their best one much less."""
    return lambda r: next(x["best_test_mse"] for x in r["runs"] if x["model"] == model and x["T"] == T)


def _rate(name: str, key: str = "rates") -> Callable[[dict], float]:
    return lambda r: r[key][name]


ENTRIES = [
    Entry("hello", ["hello.py"], [
        Check("initial loss", lambda r: r["initial_loss"], 1.583, "abs", 0.001),
        Check("final loss", lambda r: r["final_loss"], 0.0079, "factor", 1.5),
        Check("predicts e l l o", lambda r: r["correct"], True, "eq"),
    ], quick=True, minutes="0.03"),
    Entry("adding_short", ["adding_problem.py", "--lengths", "50", "--steps", "1000"], [
        Check("tanh T=50 (stays at the baseline)", _run("tanh", 50), 0.1686, "abs", 0.01),
        Check("IRNN T=50 (best along the run)", _best("irnn", 50), 0.0061, "factor", 3.0),
        Check("np-RNN T=50 (best along the run)", _best("nprnn", 50), 0.0119, "factor", 3.0),
        Check("LSTM T=50", _run("lstm", 50), 0.0012, "factor", 2.0),
    ], quick=True, minutes="0.25"),
    Entry("vanishing", ["vanishing_gradients.py"], [
        Check("tanh rho=0.8", _rate("tanh RNN, rho=0.8"), 0.74, "abs", 0.01),
        Check("tanh rho=1", _rate("tanh RNN, rho=1"), 0.88, "abs", 0.01),
        Check("tanh rho=1.2", _rate("tanh RNN, rho=1.2"), 0.97, "abs", 0.01),
        Check("relu rho=0.8", _rate("relu RNN, rho=0.8"), 0.59, "abs", 0.01),
        Check("relu rho=1", _rate("relu RNN, rho=1"), 0.79, "abs", 0.01),
        Check("relu rho=1.2", _rate("relu RNN, rho=1.2"), 1.06, "abs", 0.01),
        Check("IRNN", _rate("IRNN (relu, W_h = I)"), 0.997, "abs", 0.005),
        Check("np-RNN", _rate("np-RNN (relu)"), 0.65, "abs", 0.01),
        Check("LSTM default", _rate("LSTM, default init"), 0.64, "abs", 0.01),
        Check("LSTM forget bias 1", _rate("LSTM, forget bias 1"), 0.85, "abs", 0.01),
        Check("LSTM forget bias 3", _rate("LSTM, forget bias 3"), 1.00, "abs", 0.01),
        Check("clipped training: last loss", lambda r: r["training"]["clipped"][-1], 0.05, "max"),
        Check("unclipped training reaches NaN", lambda r: any(v != v for v in r["training"]["unclipped"]), True, "eq"),
    ], quick=True, minutes="0.15"),
    Entry("sentiment_nb", ["sentiment.py", "--nb-only"], [
        Check("naive Bayes (sentences) test %", lambda r: 100 * r["naive_bayes"]["sentences"]["test_acc"], 81.77, "abs", 0.01),
        Check("naive Bayes (sentences) dev %", lambda r: 100 * r["naive_bayes"]["sentences"]["dev_acc"], 79.70, "abs", 0.01),
    ], quick=True, minutes="0.02"),
    Entry("seq2seq", ["seq2seq.py"], [
        Check("test exact-sequence %", lambda r: 100 * r["test_exact"], 99.0, "min"),
    ], quick=True, minutes="0.5"),
    Entry("adding", ["adding_problem.py"], [
        Check("IRNN T=100 (best along the run)", _best("irnn", 100), 0.00071, "factor", 3.0),
        Check("np-RNN T=100 (best along the run)", _best("nprnn", 100), 0.0188, "factor", 3.0),
        Check("LSTM T=100", _run("lstm", 100), 0.00064, "factor", 3.0),
    ], quick=False, minutes="1.2"),
    Entry("char_lm", ["char_lm.py"], [
        Check("validation bits/char", lambda r: r["val_bpc"], 2.353, "abs", 0.05),
        Check("validation below 2.5 bits/char", lambda r: r["val_bpc"], 2.5, "max"),
    ], quick=False, minutes="1.3"),
    Entry("word_lm_ngram", ["word_lm.py", "--model", "ngram"], [
        Check("KN5 valid ppl", lambda r: r["models"]["ngram"]["valid_ppl"], 147.7, "abs", 0.1),
        Check("KN5 test ppl", lambda r: r["models"]["ngram"]["test_ppl"], 141.1, "abs", 0.1),
    ], quick=True, minutes="0.04"),
    Entry("word_lm_window", ["word_lm.py", "--model", "window"], [
        Check("window NNLM valid ppl", lambda r: r["models"]["window"]["valid_ppl"], 216.8, "rel", 0.02),
        Check("window NNLM test ppl", lambda r: r["models"]["window"]["test_ppl"], 204.2, "rel", 0.02),
    ], quick=False, minutes="3.5"),
    Entry("word_lm_rnn", ["word_lm.py", "--model", "rnn"], [
        Check("RNN valid ppl", lambda r: r["models"]["rnn"]["valid_ppl"], 271.6, "rel", 0.02),
        Check("RNN test ppl", lambda r: r["models"]["rnn"]["test_ppl"], 262.5, "rel", 0.02),
    ], quick=False, minutes="3.1"),
    Entry("word_lm_lstm", ["word_lm.py", "--model", "lstm"], [
        Check("LSTM valid ppl", lambda r: r["models"]["lstm"]["valid_ppl"], 126.4, "abs", 3.0),
        Check("LSTM test ppl", lambda r: r["models"]["lstm"]["test_ppl"], 122.5, "abs", 3.0),
    ], quick=False, minutes="11.4"),
    Entry("sentiment_lstm", ["sentiment.py"], [
        Check("LSTM test %", lambda r: 100 * r["lstm"]["test_acc"], 84.5, "abs", 1.5),
    ], quick=False, minutes="1.6"),
    Entry("sentiment_bilstm", ["sentiment.py", "--bidirectional"], [
        Check("BiLSTM test %", lambda r: 100 * r["lstm"]["test_acc"], 84.9, "abs", 1.5),
    ], quick=False, minutes="2.5"),
    Entry("sentiment_sentences", ["sentiment.py", "--sentences-only", "--epochs", "10"], [
        Check("LSTM on sentences test %", lambda r: 100 * r["lstm"]["test_acc"], 78.5, "abs", 2.0),
        Check("loses to naive Bayes", lambda r: r["lstm"]["test_acc"] < r["naive_bayes"]["sentences"]["test_acc"], True, "eq"),
    ], quick=False, minutes="0.5"),
]


def run_entry(entry: Entry, out_root: str) -> tuple[bool, list[tuple[Check, Any, bool]], float]:
    out = os.path.join(out_root, entry.name)
    cmd = [sys.executable, os.path.join(HERE, entry.argv[0]), *entry.argv[1:], "--out", out, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"{entry.name}: exited {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return False, [], seconds
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    rows = []
    for c in entry.checks:
        try:
            got = c.get(results)
        except (KeyError, StopIteration, TypeError):
            got = None
        rows.append((c, got, c.passes(got) if got is not None else False))
    return all(ok for _, _, ok in rows), rows, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reproduce.py", description="rerun the README's results table and compare")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="rerun the quick rows and compare (the default)")
    g.add_argument("--all", action="store_true", help="rerun every row, the long ones too (over an hour)")
    g.add_argument("--list", action="store_true", help="print every row's command and wall time, run nothing")
    g.add_argument("--only", nargs="+", choices=[e.name for e in ENTRIES], help="rerun these rows")
    p.add_argument("--out", default=None, help="folder for the runs' outputs (default: a temporary folder)")
    args = p.parse_args(argv)

    if args.list:
        for e in ENTRIES:
            print(f"{e.name:20s} {'quick' if e.quick else 'long ':5s} {e.minutes:>5s} min  {e.command()}"
                  + (f"   ({e.note})" if e.note else ""))
        return 0
    chosen = [e for e in ENTRIES if (args.all or (e.name in args.only if args.only else e.quick))]
    failed = []
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        out_root = args.out or tmp
        for e in chosen:
            print(f"\n$ {e.command()}", flush=True)
            ok, rows, seconds = run_entry(e, out_root)
            for c, got, good in rows:
                shown = f"{got:.4g}" if isinstance(got, float) else repr(got)
                print(f"  {'ok  ' if good else 'FAIL'} {c.label:40s} got {shown:>10s}   want {c.describe()}")
            print(f"  {'ok' if ok else 'FAILED'} in {seconds / 60:.1f} min wall (README: {e.minutes} min on idle cores)",
                  flush=True)
            if not ok:
                failed.append(e.name)
    print(f"\n{len(chosen) - len(failed)} of {len(chosen)} reproduced" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
