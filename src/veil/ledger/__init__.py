"""The privacy ledger: every release spends budget.

A dataset gets a budget (``(epsilon, delta)`` or ``rho`` for zCDP). Each
release is a :class:`PrivacyEvent` made of :class:`Mechanism` descriptions
(Laplace with its scale and sensitivity, Gaussian with its sigma, a
Poisson-subsampled Gaussian with ``q``, ``sigma`` and steps, ...), composed
tightly by privacy-loss distributions (:class:`PLDAccountant`) and
cross-checked by Rényi DP (:class:`RDPAccountant`). :meth:`Ledger.charge`
refuses, atomically and before anything is computed, a release that would
exceed the budget.

The noise calibration that DP-SGD and DP-FedAvg share is the public submodule
:mod:`veil.ledger.calibrate`; the checks every release makes of its privacy
parameters are :mod:`veil.ledger.params`.

>>> from veil.ledger import Mechanism, PLDAccountant
>>> gaussian = Mechanism.gaussian(sigma=5.0, sensitivity=1.0).dp_event
>>> round(PLDAccountant().epsilon([gaussian] * 100, delta=1e-5), 2)
10.0
"""

from veil.ledger._accountants import (
    PLDAccountant,
    RDPAccountant,
    gaussian_epsilon,
    pure_epsilon,
    zcdp_rho,
)
from veil.ledger._budget import Budget, BudgetStatus, Receipt, Spent
from veil.ledger._burndown import BudgetChange, BurnDown, BurnPoint
from veil.ledger._composition import Composition, recompose
from veil.ledger._entry import LedgerEntry
from veil.ledger._events import (
    DiscreteGaussianDpEvent,
    EpsilonDeltaDpEvent,
    ExponentialDpEvent,
    Mechanism,
    PrivacyEvent,
)
from veil.ledger._guard import BudgetGuard, Charge, LocalBudget
from veil.ledger._history import LedgerIntegrityError
from veil.ledger._ledger import Ledger
from veil.ledger._views import ReleaseFilters, ReleasePage
from veil.ledger.params import MAX_RELEASE_EPSILON

__all__ = [
    "MAX_RELEASE_EPSILON",
    "Budget",
    "BudgetChange",
    "BudgetGuard",
    "BudgetStatus",
    "BurnDown",
    "BurnPoint",
    "Charge",
    "Composition",
    "DiscreteGaussianDpEvent",
    "EpsilonDeltaDpEvent",
    "ExponentialDpEvent",
    "Ledger",
    "LedgerEntry",
    "LedgerIntegrityError",
    "LocalBudget",
    "Mechanism",
    "PLDAccountant",
    "PrivacyEvent",
    "RDPAccountant",
    "Receipt",
    "ReleaseFilters",
    "ReleasePage",
    "Spent",
    "gaussian_epsilon",
    "pure_epsilon",
    "recompose",
    "zcdp_rho",
]
