"""The graphical model behind AIM and MST: mbi (private-pgm) estimation, and fast marginals from it.

Veil measures; mbi only estimates. Everything here is post-processing of
noisy measurements: the model, its marginals, its samples. mbi runs on JAX
(float64, CPU). Two things are done in NumPy instead of through mbi, for
speed (measured on Adult: mbi's ``project`` compiles a program per marginal
shape, about 0.9 CPU-seconds each, hundreds per round):

* a marginal inside one of the model's cliques is summed from that clique's
  marginal;
* any other marginal is counted on a sample drawn from the model (its
  sampling error is far below the measurement noise that AIM's selection
  scores already subtract).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from veil._memory import resident_mb
from veil.synth._workload import marginal

__all__ = ["Model", "estimate", "load_mbi"]

_MBI: Any = None
CACHE_LIMIT_BYTES = 256 * 2**20
"""Largest size of the compilation cache (JAX evicts the least recently used entries)."""


def compilation_cache_folder() -> Path | None:
    """The user's own folder for JAX's compiled programs, or ``None`` where it is not safe.

    ``$XDG_CACHE_HOME/veil/jax`` (``~/.cache/veil/jax``; a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG specification says), its ``veil``
    parent and itself created readable and writable by their owner only. JAX
    loads and runs what it finds there, so the folder is not used (synthesis
    then compiles its programs every run, as without a cache) when it or its
    ``veil`` parent is a link, belongs to another account or may be written by
    others, or when a folder above them may be written by others without the
    sticky bit (``/tmp`` has it) or belongs to an account other than the user
    and root: whoever could rename a folder on the way could put theirs in its
    place. Nor where the system has no user ids (Windows).
    """
    uid = getattr(os, "getuid", lambda: None)()
    if uid is None:
        return None
    configured = Path(os.environ.get("XDG_CACHE_HOME", ""))
    base = configured if configured.is_absolute() else Path.home() / ".cache"
    folder = base / "veil" / "jax"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        own = [path.lstat() for path in (folder.parent, folder)]
        above = [path.stat() for path in folder.parent.resolve().parents]
    except (OSError, RuntimeError):
        return None
    for info in own:
        if (
            not stat.S_ISDIR(info.st_mode)  # a link to somewhere else is not ours to trust
            or info.st_uid != uid
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return None
    for info in above:
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid not in {uid, 0} or (writable and not info.st_mode & stat.S_ISVTX):
            return None
    return folder


def load_mbi(*, cache: bool = True) -> Any:
    """Import mbi with JAX in float64 on the CPU (once per process), its notices quiet.

    With ``cache`` (the default), JAX keeps the programs it compiles in
    :func:`compilation_cache_folder`, so that a second synthesis of the same
    shape skips compiling them (a 6-column AIM: 32 CPU-s cold, 21 warm); a
    cache the user set for JAX (``JAX_COMPILATION_CACHE_DIR``) is kept as is.
    The results do not depend on it. Only the first call in a process decides.
    """
    global _MBI  # noqa: PLW0603 - one import per process, configured before first use
    if _MBI is None:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax  # noqa: PLC0415 - heavy; only synthesis needs it

        jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]  # noqa: FBT003 - JAX API
        # JAX locks its cache's entries with filelock when the cache has a size limit;
        # without it, a reader could load an entry another process is still writing.
        if (
            cache
            and not getattr(jax.config, "jax_compilation_cache_dir", None)
            and importlib.util.find_spec("filelock") is not None
        ):
            folder = compilation_cache_folder()
            if folder is not None:
                jax.config.update("jax_compilation_cache_dir", str(folder))  # type: ignore[no-untyped-call]
                # Each of synthesis's programs compiles in well under JAX's default
                # threshold of one second: keep them all, within a size limit.
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # type: ignore[no-untyped-call]
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)  # type: ignore[no-untyped-call]
                jax.config.update("jax_compilation_cache_max_size", CACHE_LIMIT_BYTES)  # type: ignore[no-untyped-call]
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mbi  # noqa: PLC0415

        _MBI = mbi
    return _MBI


class Model:
    """An estimated model over ``columns`` with ``sizes`` cells, and its marginals."""

    def __init__(self, mrf: Any, columns: Sequence[str], sizes: Sequence[int]) -> None:
        self.mrf = mrf
        self.columns = list(columns)
        self.sizes = list(sizes)
        self.total = max(float(mrf.total), 1.0)
        self._cliques: list[tuple[tuple[str, ...], np.ndarray]] = []
        for clique in mrf.marginals.cliques:
            factor = mrf.marginals[clique]
            self._cliques.append((tuple(factor.domain.attributes), np.asarray(factor.values)))
        self._sample: np.ndarray | None = None

    @property
    def cliques(self) -> list[tuple[str, ...]]:
        return [tuple(c) for c in self.mrf.cliques]

    def covers(self, clique: Sequence[str]) -> bool:
        wanted = set(clique)
        return any(wanted <= set(attrs) for attrs, _ in self._cliques)

    def marginal(
        self, clique: Sequence[str], rng: np.random.Generator, sample_rows: int
    ) -> np.ndarray:
        """The model's counts over ``clique`` (flattened in ``clique``'s order, summing to the total)."""
        wanted = tuple(clique)
        for attrs, values in self._cliques:
            if set(wanted) <= set(attrs):
                drop = tuple(i for i, a in enumerate(attrs) if a not in wanted)
                summed = values.sum(axis=drop) if drop else values
                kept = [a for a in attrs if a in wanted]
                order = [kept.index(a) for a in wanted]
                return np.asarray(np.transpose(summed, order), dtype=np.float64).ravel()
        sample = self.sample(rng, sample_rows)
        index = [self.columns.index(c) for c in wanted]
        counts = marginal(sample, index, [self.sizes[i] for i in index])
        return counts * (self.total / max(len(sample), 1))

    def sample(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """Rows drawn from the model (cached: one sample per model)."""
        if self._sample is None or len(self._sample) != rows:
            self._sample = self.synthetic(rng, rows)
        return self._sample

    def synthetic(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` synthetic records as cell codes (n x columns), mbi's randomised rounding."""
        # mbi draws from NumPy's global generator: seed it from ours so a seeded run repeats.
        np.random.seed(int(rng.integers(0, 2**32 - 1)))  # noqa: NPY002 - mbi's own generator
        data = self.mrf.synthetic_data(rows=max(int(rows), 1))
        frame = data.to_dict() if hasattr(data, "to_dict") else data.df
        return np.column_stack([np.asarray(frame[c], dtype=np.int64) for c in self.columns])


def estimate(
    columns: Sequence[str],
    sizes: Sequence[int],
    measurements: Sequence[tuple[tuple[str, ...], np.ndarray, float]],
    *,
    iters: int,
    warm: Model | None = None,
) -> Model:
    """mbi's mirror descent on the noisy measurements ``(clique, counts, sigma)``."""
    mbi = load_mbi()
    domain = mbi.Domain(list(columns), [int(s) for s in sizes])
    linear = [
        mbi.LinearMeasurement(np.asarray(y, dtype=np.float64), tuple(c), stddev=float(s))
        for c, y, s in measurements
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mrf = mbi.estimation.MirrorDescent().estimate(
            domain, linear, iters=max(int(iters), 1), warm_start=None if warm is None else warm.mrf
        )
    return Model(mrf, columns, sizes)


# JAX keeps every program it compiles. AIM's refits reuse most of them (each measurement's
# loss term, the projections of the cliques it already had), and recompiling all of them
# at every refit took most of the time on small tables (a 300-row table: 19 CPU-s, 8.6 s
# keeping them); but each refit also adds programs never used again (about 50 MB a round
# on Adult). So they are kept while the process grows by less than this, then dropped.
COMPILED_BUDGET_MB = 192.0


class CompiledPrograms:
    """JAX's compiled programs, kept across refits up to a memory budget and dropped at the end.

    ``check()`` after each fit drops them once the process has grown by more
    than ``budget_mb`` since the last drop (always, where memory cannot be
    read); leaving the ``with`` block drops them, so nothing outlives a run.
    """

    def __init__(self, budget_mb: float = COMPILED_BUDGET_MB) -> None:
        self.budget_mb = budget_mb
        self.drops = 0
        self._since: float | None = None

    def __enter__(self) -> Self:
        self._since = resident_mb()
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop()

    def check(self) -> None:
        now = resident_mb()
        if now is None or self._since is None or now - self._since > self.budget_mb:
            self._drop()

    def _drop(self) -> None:
        import jax  # noqa: PLC0415

        jax.clear_caches()  # type: ignore[no-untyped-call]
        self.drops += 1
        self._since = resident_mb()


def model_size_mb(
    columns: Sequence[str], sizes: Sequence[int], cliques: Sequence[Sequence[str]]
) -> float:
    """The size (MB, float64) of the junction tree over ``cliques`` (mbi's measure)."""
    mbi = load_mbi()
    domain = mbi.Domain(list(columns), [int(s) for s in sizes])
    return float(mbi.junction_tree.hypothetical_model_size(domain, [tuple(c) for c in cliques]))


def cells(sizes: dict[str, int], clique: Sequence[str]) -> int:
    return math.prod(sizes[c] for c in clique)
