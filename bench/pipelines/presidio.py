"""Presidio's pattern recognizers, set up for comparison: no NLP model, no network look-ups.

presidio-analyzer is an optional benchmark dependency (``pip install -e '.[bench-pipelines]'``).
The engine is ``AnalyzerEngine`` with Presidio's ``NoOpNlpEngine``, which loads no spaCy model,
and only the recognizers of the six entity types compared here. Presidio's email recognizer
calls tldextract, which by default downloads the public suffix list. Here tldextract uses the
copy bundled with it instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

ENTITIES: Final = (
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)


def presidio_engine() -> Any:
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # An empty list of suffix list URLs makes tldextract use its bundled snapshot, offline.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    registry = RecognizerRegistry()
    for recognizer in (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    ):
        registry.add_recognizer(recognizer())
    nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def presidio_finder(engine: Any) -> Any:
    """Return a function of a text that yields (start, end, detector) as the scorer wants."""
    from tests.pipelines.labelled import ENTITY_TYPES

    def find(text: str) -> Iterable[tuple[int, int, str]]:
        for result in engine.analyze(text=text, language="en", entities=list(ENTITIES)):
            yield result.start, result.end, ENTITY_TYPES[result.entity_type]

    return find
