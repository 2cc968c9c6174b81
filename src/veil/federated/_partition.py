"""Split a labelled dataset among simulated federated clients, IID or not.

:func:`partition` returns one sorted index array per client; the arrays are
disjoint and together cover every sample, whatever the scheme:

* ``"iid"``: shuffle, then split into ``clients`` parts whose sizes differ by
  at most one.
* ``"dirichlet"`` (Hsu et al. 2019, "Measuring the effects of non-identical
  data distribution for federated visual classification"): for each class,
  draw client proportions ``p ~ Dir(alpha 1)`` and deal that class's samples
  out accordingly. Small ``alpha`` (0.1) gives each client a few dominant
  classes, large ``alpha`` (100) is close to IID. The draw is repeated until
  every client holds at least ``min_size`` samples.
* ``"pathological"`` (McMahan et al. 2017, "Communication-efficient learning
  of deep networks from decentralized data", AISTATS): sort by label, cut
  into ``clients * classes_per_client`` shards, give each client
  ``classes_per_client`` shards at random. Here the shards are cut inside
  each class (each class gets a share of the shards in proportion to its
  size, at least one), so a client never holds more than
  ``classes_per_client`` classes; McMahan's cut of the sorted array lets a
  shard straddle two classes when class sizes are not multiples of the shard
  size. On balanced labels (MNIST's 200 shards of 300) the two agree.
* ``"quantity"``: IID labels, unequal sizes. Each client gets ``min_size``
  samples plus a ``Dir(alpha 1)`` share of the rest (so sizes follow
  ``Dir(alpha) n`` and none falls below ``min_size``).

:func:`describe_partition` summarises a split (sizes, classes per client,
per-class counts) for logs and reports.

The randomness is :func:`numpy.random.default_rng` seeded by ``seed``: a
partition is an experimental set-up, not privacy noise, and must be
reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.errors import InvalidInputError
from veil.federated._aggregate import _positive
from veil.federated._aggregate import check_whole as _whole

__all__ = ["SCHEMES", "describe_partition", "partition"]

SCHEMES = ("iid", "dirichlet", "pathological", "quantity")
"""The partition schemes :func:`partition` knows."""

_MAX_DRAWS = 1000  # Dirichlet redraws before giving up on min_size


def _classes(labels: object) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` checked, and each sample's class as an index into the sorted distinct labels."""
    fix = "pass a 1-D array with one class label (integer or string) per sample"
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.size == 0:
        got = f"shape {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise InvalidInputError(
            "labels must be a non-empty 1-D array",
            expected="a NumPy array of shape (n_samples,)",
            got=got,
            fix=fix,
        )
    if labels.dtype.kind == "f" and not (
        np.isfinite(labels).all() and (labels == np.round(labels)).all()
    ):
        raise InvalidInputError(
            "labels must be discrete classes",
            expected="integer (or whole-number) class labels",
            got=f"non-integral float labels such as {labels[labels != np.round(labels)][:3]}",
            fix=fix,
        )
    if labels.dtype.kind not in "biufUS":
        raise InvalidInputError(
            "labels must be integers or strings",
            expected="an integer, bool or string array",
            got=f"dtype {labels.dtype}",
            fix=fix,
        )
    return np.unique(labels, return_inverse=True)


def _alpha(alpha: object) -> float:
    try:
        return _positive(alpha, "alpha")
    except InvalidInputError as exc:
        raise InvalidInputError(
            "alpha (the Dirichlet concentration) must be positive and finite",
            expected="alpha > 0: about 0.1 for strong skew, 100 for nearly IID",
            got=repr(alpha),
            fix="pass --alpha 0.5 (the usual benchmark setting)",
        ) from exc


def _too_small(n: int, clients: int, min_size: int) -> None:
    if clients * min_size > n:
        raise InvalidInputError(
            "there are not enough samples for every client to get min_size",
            expected=f"clients x min_size <= {n} samples",
            got=f"{clients} clients x min_size {min_size} = {clients * min_size}",
            fix=f"use at most {n // min_size} clients or a smaller min_size",
        )


def _iid(n: int, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(n), clients))


def _dirichlet(
    classes: np.ndarray, clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    members = [np.flatnonzero(classes == c) for c in range(int(classes.max()) + 1)]
    for _ in range(_MAX_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for indices in members:
            shuffled = rng.permutation(indices)
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * shuffled.size).astype(np.int64)
            for client, chunk in enumerate(np.split(shuffled, cuts)):
                parts[client].append(chunk)
        joined = [np.concatenate(chunks) for chunks in parts]
        if min(part.size for part in joined) >= min_size:
            return joined
    raise InvalidInputError(
        f"no Dirichlet draw in {_MAX_DRAWS} gave every client at least min_size samples",
        expected=f"every one of {clients} clients with >= {min_size} samples",
        got=f"alpha = {alpha} with {classes.size} samples",
        fix="raise alpha, lower min_size or use fewer clients",
    )


def _shard_counts(sizes: np.ndarray, shards: int) -> np.ndarray:
    """Shards per class: one each, then each extra to the class whose shards are largest."""
    counts = np.ones(sizes.size, dtype=np.int64)
    for _ in range(shards - sizes.size):
        counts[int(np.argmax(sizes / counts))] += 1
    return counts


def _pathological(
    classes: np.ndarray, clients: int, per_client: int, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    n_classes = int(classes.max()) + 1
    shards = clients * per_client
    if shards < n_classes:
        raise InvalidInputError(
            "pathological partitioning needs at least one shard per class",
            expected=f"clients x classes_per_client >= {n_classes} classes",
            got=f"{clients} x {per_client} = {shards} shards",
            fix=f"raise classes_per_client to {-(-n_classes // clients)} or use more clients",
        )
    if shards > classes.size:
        raise InvalidInputError(
            "pathological partitioning needs at least one sample per shard",
            expected=f"clients x classes_per_client <= {classes.size} samples",
            got=f"{clients} x {per_client} = {shards} shards",
            fix="lower classes_per_client or use fewer clients",
        )
    members = [rng.permutation(np.flatnonzero(classes == c)) for c in range(n_classes)]
    counts = _shard_counts(np.array([m.size for m in members], dtype=np.float64), shards)
    pieces = [
        piece
        for indices, count in zip(members, counts, strict=True)
        for piece in np.array_split(indices, count)
    ]
    for _ in range(_MAX_DRAWS):
        owners = rng.permutation(shards).reshape(clients, per_client)
        parts = [np.concatenate([pieces[s] for s in row]) for row in owners]
        if min(part.size for part in parts) >= min_size:
            return parts
    raise InvalidInputError(
        "no assignment of shards gave every client at least min_size samples",
        expected=f"every client with >= {min_size} samples",
        got=f"shards of about {classes.size // shards} samples, {per_client} per client",
        fix="lower min_size or use fewer clients",
    )


def _quantity(
    n: int, clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    rest = n - clients * min_size
    shares = rng.dirichlet(np.full(clients, alpha)) * rest
    extra = np.floor(shares).astype(np.int64)
    # Largest remainders take the samples that flooring left over.
    leftover = rest - int(extra.sum())
    extra[np.argsort(extra - shares, kind="stable")[:leftover]] += 1
    cuts = np.cumsum(extra + min_size)[:-1]
    return list(np.split(rng.permutation(n), cuts))


def partition(
    labels: np.ndarray,
    clients: int,
    scheme: str,
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` among ``clients`` by ``scheme``.

    Args:
        labels: Each sample's class (integers or strings), shape ``(n,)``.
        clients: How many clients, at least 1 and at most ``n / min_size``.
        scheme: One of :data:`SCHEMES` (see the module docstring).
        alpha: The Dirichlet concentration of ``"dirichlet"`` and
            ``"quantity"``; smaller is more skewed.
        classes_per_client: The shards (hence at most the classes) each client
            gets under ``"pathological"``.
        seed: Seeds :func:`numpy.random.default_rng`; equal seeds give equal splits.
        min_size: The fewest samples any client may get.

    Returns:
        One sorted ``int64`` index array per client: disjoint, covering all ``n`` samples.

    Raises:
        InvalidInputError: An unknown scheme, malformed labels, too few
            samples for the clients, ``alpha <= 0``, or a Dirichlet draw that
            cannot give every client ``min_size`` samples.
    """
    if scheme not in SCHEMES:
        raise InvalidInputError(
            "unknown partition scheme",
            expected=f"one of {', '.join(SCHEMES)}",
            got=repr(scheme),
            fix="pass --partition dirichlet (non-IID) or --partition iid",
        )
    _, classes = _classes(labels)
    n = classes.size
    count = _whole(clients, "clients", minimum=1)
    smallest = _whole(min_size, "min_size", minimum=1)
    if count > n:
        raise InvalidInputError(
            "more clients than samples",
            expected=f"clients <= {n} (the number of samples)",
            got=f"clients = {count}",
            fix=f"use at most {n} clients",
        )
    _too_small(n, count, smallest)
    rng = np.random.default_rng(_whole(seed, "seed"))
    if scheme == "iid":  # clients x min_size <= n, so every part has >= min_size
        parts = _iid(n, count, rng)
    elif scheme == "dirichlet":
        parts = _dirichlet(classes, count, _alpha(alpha), smallest, rng)
    elif scheme == "pathological":
        per_client = _whole(classes_per_client, "classes_per_client", minimum=1)
        parts = _pathological(classes, count, per_client, smallest, rng)
    else:
        parts = _quantity(n, count, _alpha(alpha), smallest, rng)
    return [np.sort(part).astype(np.int64) for part in parts]


def describe_partition(labels: np.ndarray, parts: list[np.ndarray]) -> dict[str, Any]:
    """A JSON-ready summary of a split: sizes, classes per client, per-class counts, coverage.

    Keys: ``clients``, ``samples`` (assigned, with repeats), ``sizes``,
    ``min_size``, ``max_size``, ``classes`` (the distinct labels),
    ``classes_per_client``, ``min_classes``, ``max_classes``,
    ``class_counts`` (one row per client, one column per class), ``disjoint``
    and ``covers_all``.

    Raises:
        InvalidInputError: ``labels`` is malformed, ``parts`` is empty, or an
            index is not a whole number in ``0..len(labels)-1``.
    """
    values, classes = _classes(labels)
    n = classes.size
    if not parts:
        raise InvalidInputError(
            "there is no client to describe",
            expected="a list of index arrays, one per client",
            got="an empty list",
            fix="pass the list that partition returned",
        )
    checked: list[np.ndarray] = []
    for number, part in enumerate(parts):
        array = np.asarray(part)
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise InvalidInputError(
                f"client {number}'s part is not a 1-D array of indices",
                expected="integer sample indices",
                got=f"shape {array.shape}, dtype {array.dtype}",
                fix="pass the list that partition returned",
            )
        if array.size and (array.min() < 0 or array.max() >= n):
            raise InvalidInputError(
                f"client {number}'s part indexes outside the labels",
                expected=f"indices in 0..{n - 1}",
                got=f"indices from {array.min()} to {array.max()}",
                fix="describe a partition of these same labels",
            )
        checked.append(array.astype(np.int64))
    counts = np.stack([np.bincount(classes[p], minlength=values.size) for p in checked])
    sizes = counts.sum(axis=1)
    per_client = (counts > 0).sum(axis=1)
    assigned = np.concatenate(checked)
    distinct = np.unique(assigned).size
    return {
        "clients": len(checked),
        "samples": int(assigned.size),
        "sizes": sizes.tolist(),
        "min_size": int(sizes.min()),
        "max_size": int(sizes.max()),
        "classes": values.tolist(),
        "classes_per_client": per_client.tolist(),
        "min_classes": int(per_client.min()),
        "max_classes": int(per_client.max()),
        "class_counts": counts.tolist(),
        "disjoint": distinct == assigned.size,
        "covers_all": distinct == n,
    }
