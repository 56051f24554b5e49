"""The harness every example runs on: flags, checks, BLAS threads, progress, logging, files.

    >>> p = make_parser("demo", "a demo"); args = p.parse_args(["--seed", "1"]); args.seed
    1

One :class:`Run` per example holds what a run needs besides its model: the parsed flags, the
output folder, the ``is_main`` switch (a later MPI launch sets it False on every rank but 0, and
such a rank then prints and writes nothing) and the progress display. Bad flags end the program
the way argparse does — one ``error:`` line on stderr and exit status 2 — before any work starts.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import textwrap
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run from a checkout without installing

import tinygrad_rnn as tr  # noqa: E402
import tinygrad_rnn.distributed as dist  # noqa: E402
from tinygrad_rnn.backend.jit_cache import kernels_cached  # noqa: E402
from tinygrad_rnn.serialization import atomic_write  # noqa: E402

# ------------------------------------------------------------------------------------------------
# argument types: each raises ArgumentTypeError, which argparse turns into one "error:" line + exit 2


def _number(kind: type, text: str) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (``--hidden 0`` is an error)."""
    v = _number(int, text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def nonneg_int(text: str) -> int:
    """An integer >= 0 (for flags where 0 means 'off' or 'all')."""
    v = _number(int, text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, clip norms)."""
    v = _number(float, text)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    v = _number(float, text)
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return v


def probability(text: str) -> float:
    """A dropout probability in [0, 1)."""
    v = _number(float, text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``, e.g. ``int_at_least(2)`` for sequence lengths."""
    def check(text: str) -> int:
        v = _number(int, text)
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return v
    check.__name__ = f"int>={low}"
    return check


def device_name(text: str) -> str:
    """'cpu', 'cuda' or 'cuda:0'; anything else is an unknown device (availability is checked in :func:`start`)."""
    from tinygrad_rnn.backend import normalize_device

    try:
        normalize_device(text)
    except (ValueError, TypeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' once: not when the help already says what the default is, nor for None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return super()._get_help_string(action)


def make_parser(name: str, description: str, epochs: int | None = 1,
                epochs_help: str = "passes over the training data", save_every: int | None = None,
                distributed: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every example shares.

    --device --seed --epochs --out --threads --quiet; ``epochs=None`` leaves --epochs out (the
    example adds its own). The default --out is ``runs/<name>`` in the checkout, wherever the
    command is run from; a given --out is relative to the current folder, as for any command.
    ``save_every=N`` adds --save-every (default N), --stop-after and --resume; ``distributed=True``
    adds --distributed (MPI data parallelism, automatic under mpiexec).
    """
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description, formatter_class=HelpFormatter)
    p.add_argument("--device", type=device_name, default="cpu",
                   help="'cpu', 'cuda' or 'cuda:0' (needs the [cuda] extra and a GPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, initialisation, dropout)")
    if epochs is not None:
        p.add_argument("--epochs", type=positive_int, default=epochs, help=epochs_help)
    p.add_argument("--out", default=None, help=f"folder for checkpoints, plots and results.json (default: runs/{name} "
                   "in this checkout)")
    p.add_argument("--threads", type=nonneg_int, default=1,
                   help="BLAS threads (0 = one per core); 1 is the default because on a shared machine more threads "
                        "spin against other processes and run several times slower")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    if save_every is not None:
        g = p.add_argument_group("checkpoint and resume")
        g.add_argument("--save-every", type=nonneg_int, default=save_every,
                       help=f"save the whole training state to OUT/{STATE_FILE} every N steps (0 = only at the end "
                            "and on Ctrl-C)")
        g.add_argument("--resume", default=None, metavar="PATH",
                       help=f"continue the run saved in PATH (an OUT/{STATE_FILE}); give the same flags as that run")
        g.add_argument("--stop-after", type=nonneg_int, default=0, metavar="N",
                       help="train N steps in this process, save the state and exit (0 = no limit); for time-sliced "
                            "jobs: continue with --resume")
    if distributed:
        p.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI (automatic when launched by mpiexec or srun with MPI)")
    p.set_defaults(_example=name)
    return p


# ------------------------------------------------------------------------------------------------
# library work the harness uses (atomic files, the Numba cache) lives in the library


def kernel_cache_cold(families: Iterable[str]) -> bool:
    """True when some kernel family (a name prefix: "lstm", "adam", "xent") has nothing in Numba's cache."""
    return not kernels_cached(families)


# ------------------------------------------------------------------------------------------------
# progress


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Progress of a loop of ``total`` steps: a tqdm bar on a terminal, plain periodic lines otherwise.

    The rate and ETA count training time only: wrap evaluations in ``with bar.paused():``. The
    first step (where kernels compile) is left out of the rate once later steps exist.

        >>> bar = Progress(10, "train", disable=True); bar.update(loss=0.5); bar.n
        1
    """

    def __init__(self, total: int, desc: str = "", disable: bool = False, interval: float = 30.0, unit: str = "steps",
                 stream: Any = None):
        self.total, self.desc, self.disable, self.interval, self.unit = total, desc, disable, interval, unit
        self.stream = stream or sys.stderr
        self.n, self._postfix_items = 0, []
        self.train_time, self.first_step_time = 0.0, 0.0
        self._last_tick = time.perf_counter()
        self._last_line = self._last_tick
        self._bar = None
        self.plain = not disable and not _is_terminal(self.stream)
        if not disable and not self.plain:
            try:
                from tqdm import tqdm
            except ImportError:
                self.plain = True
            else:  # our own rate/ETA in the postfix: tqdm's would count evaluation pauses
                self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=self.stream,
                                 bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}")  # postfix: ", ..."
        _ACTIVE.append(self)

    def rate(self) -> float:
        """Steps per second of training time (the first step, which may compile kernels, left out)."""
        if self.n >= 2:
            return (self.n - 1) / max(self.train_time - self.first_step_time, 1e-9)
        return self.n / max(self.train_time, 1e-9)

    def eta(self) -> float:
        r = self.rate()
        return (self.total - self.n) / r if r > 0 else math.inf

    def status(self) -> str:
        extra = "  ".join(f"{k} {_fmt(v)}" for k, v in self._postfix_items)
        return f"{self.rate():.3g} {self.unit}/s  ETA {_clock(self.eta())}" + (f"  {extra}" if extra else "")

    def update(self, n: int = 1, **postfix: Any) -> None:
        now = time.perf_counter()
        dt = now - self._last_tick
        self._last_tick = now
        self.train_time += dt
        if self.n == 0:
            self.first_step_time = dt
        self.n += n
        self._postfix_items = list(postfix.items())
        if self.disable:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
            self._bar.update(n)
        elif now - self._last_line >= self.interval or self.n >= self.total:
            self._last_line = now
            label = f"{self.desc}: " if self.desc else ""
            print(f"{label}step {self.n}/{self.total}  {self.status()}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluation, checkpoints) counts neither for the rate nor the ETA."""
        try:
            yield
        finally:
            self._last_tick = time.perf_counter()

    def close(self) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_ACTIVE: list[Progress] = []


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_PRINTS = [True]  # False on every process but the main one (a later MPI launch: rank 0 alone prints)


def log(*parts: Any, file: Any = None) -> None:
    """Print a status line; with a tqdm bar on screen, above the bar instead of glued onto it."""
    if not _PRINTS[0]:
        return
    text = " ".join(str(p) for p in parts)
    stream = file or sys.stdout
    if any(b._bar is not None for b in _ACTIVE):
        from tqdm import tqdm

        tqdm.write(text, file=stream)
        stream.flush()
    else:
        print(text, file=stream, flush=True)


# ------------------------------------------------------------------------------------------------
# the run


class Run:
    """One example run: flags, output folder, the main-process switch, logging and file writing.

        >>> run = start(make_parser("demo", "d"), ["--out", "/tmp/demo_run", "--quiet"]); run.path("x.json")
        '/tmp/demo_run/x.json'
    """

    def __init__(self, args: argparse.Namespace, parser: argparse.ArgumentParser, out: str, is_main: bool = True,
                 rank: int = 0, world: int = 1, argv: Sequence[str] | None = None):
        self.args, self.parser, self.out, self.is_main = args, parser, out, is_main
        self.rank, self.world = rank, world  # MPI rank and world size (0 and 1 in one process)
        self.argv = list(sys.argv[1:] if argv is None else argv)  # for the "resume with:" line
        self.t0 = time.perf_counter()
        self.blas_limit: Any = None
        self.resume_state: dict[str, Any] | None = None  # the loaded --resume file, checked against the flags
        self.steps_here = 0  # training steps taken by this process (for --stop-after)
        self._interrupted = False
        self._old_sigint: Any = None

    # -- checks that need more than one flag, in each example's terms
    def error(self, message: str) -> None:
        """Stop with ``<prog>: error: message`` and exit status 2, as argparse does for a bad flag (one rank prints)."""
        if not self.is_main:
            sys.exit(2)
        self.parser.error(message)

    def flags(self) -> dict[str, Any]:
        """The parsed flags as a plain dict, for results.json."""
        return {k: v for k, v in vars(self.args).items() if not k.startswith("_")}

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def log(self, *parts: Any) -> None:
        if self.is_main:
            log(*parts)

    def note(self, *parts: Any) -> None:
        """A side remark on stderr (what was written where), so stdout keeps the results."""
        if self.is_main:
            log(*parts, file=sys.stderr)

    def progress(self, total: int, desc: str = "", unit: str = "steps") -> Progress:
        return Progress(total, desc, disable=self.args.quiet or not self.is_main, unit=unit)

    def announce_compile(self, *families: str) -> bool:
        """Print 'compiling kernels (first run only)...' when Numba's cache lacks a kernel family."""
        if self.args.device == "cpu" and kernel_cache_cold(families):
            self.note("compiling kernels (first run only; ~20-30 s)...")
            return True
        return False

    # -- files, written by the main process only
    def write_results(self, results: dict[str, Any]) -> str:
        path = self.path("results.json")
        if self.is_main:
            atomic_write(path, json.dumps(results, indent=2, default=_jsonable))
        return path

    def write_text(self, name: str, text: str) -> str:
        path = self.path(name)
        if self.is_main:
            atomic_write(path, text)
        return path

    def save_checkpoint(self, module: tr.nn.Module, name: str, **meta: Any) -> str:
        """``module.save`` into the output folder: atomic, with the mode a plain file would have
        (``tr.save``, under ``Module.save``, writes ``0o666 & ~umask`` through a temporary file)."""
        path = self.path(name)
        if self.is_main:
            module.save(path, **meta)
        return path

    def save_plot(self, name: str, series: Iterable[tuple[str, Sequence[float], Sequence[float]]], xlabel: str,
                  ylabel: str, title: str, logy: bool = False) -> str | None:
        if not self.is_main:
            return None
        return save_plot(self.path(name), series, xlabel, ylabel, title, logy)

    # -- data parallelism (MPI): every rank runs the example; rank 0 alone prints, evaluates and writes
    def wrap(self, model: tr.nn.Module) -> tr.nn.Module:
        """``DistributedDataParallel(model)`` when this run is distributed, else ``model`` itself.

        Forward the training batches through what this returns; evaluate and save ``model``.
        """
        if not dist.is_initialized():
            return model
        from tinygrad_rnn.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on some rank (a collective: every rank must call it)."""
        if self.world == 1:
            return bool(flag)
        t = tr.tensor(np.array([1.0 if flag else 0.0]))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum_ranks(self, *values: float) -> list[float]:
        """Each value summed over the ranks (a collective; the values themselves in one process)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = tr.tensor(np.array(values, dtype=np.float64))
        dist.all_reduce(t)
        return [float(v) for v in t.numpy()]

    # -- checkpoints of the whole training state, Ctrl-C, --stop-after
    def state_path(self) -> str:
        return self.path(STATE_FILE)

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """While inside, the first Ctrl-C asks to stop after the current step (and save); a second one quits."""
        def on_sigint(signum: int, frame: Any) -> None:
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            self.note("\nCtrl-C: saving the training state after this step (Ctrl-C again quits without saving)")

        try:
            self._old_sigint = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread (an example imported by a test): no handler
            self._old_sigint = None
        try:
            yield
        finally:
            if self._old_sigint is not None:
                signal.signal(signal.SIGINT, self._old_sigint)
                self._old_sigint = None

    def step_done(self, loss: float, stop: bool = False) -> tuple[float, str | None]:
        """Call after every training step: returns the loss averaged over the ranks and why to stop, if so.

        The reason is ``"interrupted"`` (Ctrl-C), ``"stop-after"`` (--stop-after reached) or ``"limit"``
        (``stop`` was True on some rank: a deadline); None means go on. Under MPI this is one tiny
        all-reduce, so every rank stops at the same step even when only one was interrupted.
        """
        self.steps_here += 1
        stop_after = getattr(self.args, "stop_after", 0)
        flags = np.array([loss, float(stop), float(self._interrupted),
                          float(bool(stop_after) and self.steps_here >= stop_after)])
        if self.world > 1:
            t = tr.tensor(flags)
            dist.all_reduce(t)
            flags = t.numpy()
            flags[0] /= self.world
        reason = "interrupted" if flags[2] else "stop-after" if flags[3] else "limit" if flags[1] else None
        return float(flags[0]), reason

    def after_step(self, reason: str | None, step: int, state: Callable[[], dict[str, Any]], last: bool = False) -> None:
        """The tail of every training step, after :meth:`step_done`: on Ctrl-C or --stop-after save ``state()``
        and exit (not when this was the run's ``last`` step anyway); otherwise save it when --save-every is due.

        ``step`` counts the steps of the whole run (what --save-every and the resume message refer to).
        """
        if reason in ("interrupted", "stop-after") and not last:
            self.pause(reason, step, state())
        if self.save_due(step):
            self.save_state(state())

    def save_due(self, step: int) -> bool:
        every = getattr(self.args, "save_every", 0)
        return bool(every) and step % every == 0

    def save_state(self, state: dict[str, Any]) -> str:
        """Write the training state atomically to OUT/train_state.npz with what --resume checks.

        A collective under MPI (every rank calls it; rank 0 writes): each rank's default-generator
        state is gathered into ``"rngs"``, since dropout on batches of other shapes moves them apart.
        """
        path = self.state_path()
        rngs = [tr.get_rng_state()]
        if self.world > 1:
            from mpi4py import MPI

            rngs = MPI.COMM_WORLD.allgather(rngs[0])  # a few ints per rank
        if self.is_main:
            tr.save({"format": STATE_FORMAT, "example": self.args._example, "args": self.flags(), "ranks": self.world,
                     "rngs": rngs, **state}, path)
        return path

    def restore_rng(self, saved: dict[str, Any]) -> None:
        """Put this rank's default generator back where the saved run had it (dropout then repeats exactly)."""
        tr.set_rng_state(saved["rngs"][self.rank])

    def resume_command(self, path: str) -> str:
        """The command that continues this run from ``path``: the same flags plus ``--resume path``."""
        argv, skip = [], False
        for a in self.argv:
            if skip:
                skip = False
            elif a == "--resume":
                skip = True
            elif not a.startswith("--resume="):
                argv.append(a)
        script = os.path.join(HERE, f"{self.args._example}.py")
        rel = os.path.relpath(script)
        here = rel if not rel.startswith("..") else script
        prefix = ["mpiexec", "-n", str(self.world)] if self.world > 1 else []
        return shlex.join([*prefix, "python", here, *argv, "--resume", os.path.relpath(path) if not
                           os.path.relpath(path).startswith("..") else path])

    def pause(self, reason: str, step: int, state: dict[str, Any]) -> None:
        """Save ``state``, say how to resume, and exit: 130 after Ctrl-C, 0 after --stop-after."""
        for bar in list(_ACTIVE):
            bar.close()
        path = self.save_state(state)
        what = (f"interrupted at step {step}" if reason == "interrupted"
                else f"stopped at step {step} (--stop-after {self.args.stop_after})")
        if self.is_main:
            print(f"{what}; resume with: {self.resume_command(path)}", file=sys.stderr, flush=True)
        sys.exit(130 if reason == "interrupted" else 0)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return float(v)


def default_out(name: str) -> str:
    """``runs/<name>`` in this checkout: the same folder whichever directory the command runs in."""
    return os.path.join(ROOT, "runs", name)


def start(parser: argparse.ArgumentParser, argv: list[str] | None = None, is_main: bool = True,
          check: Callable[[argparse.Namespace, argparse.ArgumentParser], None] | None = None,
          make_out: bool | Callable[[argparse.Namespace], bool] = True, same: Sequence[str] = ()) -> Run:
    """Parse and check the flags, then seed, pick the device, limit BLAS threads, create --out.

    ``check(args, parser)`` is the example's own cross-flag validation (call ``parser.error``);
    every check runs before anything is trained, so a mistake costs seconds, not a run. Under MPI
    (or --distributed) it joins the process group first; only rank 0 then prints and writes.
    With --resume the saved state is loaded into ``run.resume_state`` and refused (one error line,
    exit 2) when another example wrote it, a flag named in ``same`` differs, or the rank count does.
    """
    if launched_by_mpi() and _env_rank() != 0:  # one rank reports a bad flag, not all N
        parser.error = lambda message: sys.exit(2)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_out(args._example)
    rank, world = 0, 1
    if not hasattr(args, "distributed") and _env_size() > 1:  # N copies would race to write the same files
        parser.error(f"{parser.prog} does not train data-parallel: run it without mpiexec (or with -n 1)")
    if hasattr(args, "distributed") and (args.distributed or launched_by_mpi()):
        args.distributed = True
        rank, world = _join_mpi(parser)
        if rank != 0:
            parser.error = lambda message: sys.exit(2)  # type: ignore[method-assign]
    is_main = is_main and rank == 0
    if check is not None:
        check(args, parser)
    if args.device != "cpu" and not tr.cuda.is_available():
        parser.error(f"argument --device: {args.device} is not usable here: {tr.cuda.unavailable_reason()}")
    out = os.path.abspath(args.out)
    if (make_out(args) if callable(make_out) else make_out) and is_main:
        _check_writable(out, parser)
    run = Run(args, parser, out, is_main, rank, world, argv)
    _PRINTS[0] = is_main
    if getattr(args, "resume", None):
        run.resume_state = _load_state(run, same)
    threads = args.threads
    if world > 1 and threads == 0:  # ranks sharing a machine: split its cores, never oversubscribe them
        threads = max(1, (os.cpu_count() or 1) // dist.get_local_world_size())
    run.blas_limit = limit_blas_threads(threads)
    np.random.seed(args.seed)
    tr.manual_seed(args.seed)
    return run


STATE_FILE = "train_state.npz"
STATE_FORMAT = "tinygrad_rnn example training state"
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")  # MPICH/Hydra (and Slurm's PMI), Open MPI, PMIx


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun --mpi) started this process."""
    return any(k in os.environ for k in _MPI_ENV)


def _env_rank() -> int:
    for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    return 0


def _env_size() -> int:
    for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    return 1


def _join_mpi(parser: argparse.ArgumentParser) -> tuple[int, int]:
    if not dist.is_available():
        parser.error("argument --distributed: needs mpi4py and an MPI library: pip install -e '.[distributed]'")
    if not dist.is_initialized():
        dist.init_process_group("mpi")
    return dist.get_rank(), dist.get_world_size()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _load_state(run: Run, same: Sequence[str]) -> dict[str, Any]:
    """Read and check the --resume file: written by this example, with the same shape-defining flags and ranks."""
    path = os.path.abspath(run.args.resume)
    if not os.path.isfile(path):
        run.error(f"argument --resume: no training state at {path}")
    try:
        state = tr.load(path)
    except ValueError as e:
        run.error(f"argument --resume: {e}")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        run.error(f"argument --resume: {path} is not a training state saved by an example (OUT/{STATE_FILE})")
    if state.get("example") != run.args._example:
        run.error(f"argument --resume: {path} was saved by {state.get('example')}.py, not {run.args._example}.py")
    saved = state.get("args", {})
    for name in same:
        mine = getattr(run.args, name)
        if name not in saved or saved[name] != mine:
            run.error(f"argument --resume: {path} was saved with {_flag(name)} {saved.get(name)!r}, this run has "
                      f"{_flag(name)} {mine!r}; give the flags of the saved run")
    if state.get("ranks", 1) != run.world:
        run.error(f"argument --resume: {path} was saved by {state.get('ranks')} rank(s), this run has {run.world}; "
                  f"launch with the same number of ranks")
    return state


def _check_writable(out: str, parser: argparse.ArgumentParser) -> None:
    try:
        if os.path.exists(out) and not os.path.isdir(out):
            parser.error(f"argument --out: {out} exists and is not a folder")
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        parser.error(f"argument --out: cannot write to {out}: {e.strerror or e}")


def limit_blas_threads(threads: int) -> Any:
    """Cap the BLAS thread pool (0 = leave it at one per core); returns threadpoolctl's handle or None.

    Measured on the project's two-core machine: two threads make the char LM step 1.4x faster
    when the machine is otherwise idle, but several times slower as soon as another process
    runs, because OpenBLAS's threads spin-wait for each other. One thread is the safe default.
    """
    if threads == 0:
        return None
    tr.set_num_threads(threads)  # our GEMMs and recurrent layers (and NumPy's OpenBLAS when it does them)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if "OPENBLAS_NUM_THREADS" not in os.environ:
            print(f"note: --threads {threads} needs threadpoolctl (pip install -e '.[examples]'); "
                  f"or set OPENBLAS_NUM_THREADS={threads}", file=sys.stderr)
        return None
    return threadpool_limits(limits=threads, user_api="blas")  # any other BLAS in the process


# ------------------------------------------------------------------------------------------------
# tables and plots


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str], title: str | None = None) -> str:
    """Print (and return) a plain-text table with aligned columns."""
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out = ([title] if title else []) + [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    text = "\n".join(out)
    log(text)
    return text


def write_results(folder: str, results: dict[str, Any]) -> str:
    """Write results.json atomically into ``folder`` with the user's umask."""
    return atomic_write(os.path.join(folder, "results.json"), json.dumps(results, indent=2, default=_jsonable))


def save_plot(path: str, series: Iterable[tuple[str, Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
              title: str, logy: bool = False) -> str | None:
    """Line plot to PNG with matplotlib (the [examples] extra); returns None with a note if it is missing.

    Long titles wrap onto a second line instead of running off the figure's edge.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: skipped {path}; pip install -e '.[examples]')", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xs, ys in series:
        ax.plot(list(xs), list(ys), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(w for line in title.split("\n") for w in textwrap.wrap(line, 60)))
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path
