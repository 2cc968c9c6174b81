"""The bytes of a CKKS exchange, for a server that receives them from outside (``veil serve``).

A public submodule: the framing of requests and answers (``MAGIC``, ``TAIL``,
:func:`pack`, :func:`unpack`), the layout check of a request
(:func:`check_layout`), the slot arithmetic (:func:`next_pow2`) and the reader
of a TenSEAL object (:func:`load_object`) that :class:`~veil.he.HEServer` uses
itself, so that the gateway checks an upload exactly as the server will read it.
"""

from veil.he._ckks import MAGIC, TAIL, check_layout, pack, unpack
from veil.he._layout import next_pow2
from veil.he._seal import load_object

__all__ = ["MAGIC", "TAIL", "check_layout", "load_object", "next_pow2", "pack", "unpack"]
