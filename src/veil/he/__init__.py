"""Encrypted inference: CKKS for models, Paillier for linear scores and sums.

:func:`compile_model` lowers a trained PyTorch or scikit-learn model
(polynomial activations, see :func:`poly_activation`) to an
:class:`HEProgram` of :class:`Affine` steps and :class:`Square` steps;
:func:`load_model_file` reads a model file without unpickling it.
:meth:`HEProgram.plan` chooses CKKS parameters (:class:`HEPlan`,
:func:`plan_parameters`); the client (:class:`HEClient`) makes keys, encrypts
and decrypts, the server (:class:`HEServer`) evaluates with only a public
context, and :func:`error_bound` bounds the error of its answer (see
``docs/he.md``). :class:`PaillierClient`, :func:`paillier_linear` and
:func:`paillier_sum` do additive work with Paillier. :func:`load_inputs`,
:func:`client_from_bytes` and :func:`respond` are the steps of an exchange
through files (``veil he``), and :func:`round_trip` runs one end to end on
bundled data (seeded: a demonstration, not private).
"""

from veil.he._ckks import error_bound
from veil.he._client import HEClient
from veil.he._compile import compile_model, poly_activation
from veil.he._demo import round_trip
from veil.he._exchange import client_from_bytes, load_inputs, respond
from veil.he._model_files import load_model_file
from veil.he._paillier import PaillierClient, paillier_linear, paillier_sum
from veil.he._plan import HEPlan, plan_parameters
from veil.he._program import HEProgram
from veil.he._server import HEServer
from veil.he._steps import Affine, Square

__all__ = [
    "Affine",
    "HEClient",
    "HEPlan",
    "HEProgram",
    "HEServer",
    "PaillierClient",
    "Square",
    "client_from_bytes",
    "compile_model",
    "error_bound",
    "load_inputs",
    "load_model_file",
    "paillier_linear",
    "paillier_sum",
    "plan_parameters",
    "poly_activation",
    "respond",
    "round_trip",
]
