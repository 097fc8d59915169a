"""What an utterance is for (statement, question, correction...), decided by cheap surface rules."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.choices import Choice
from agent.errors import BadInputError

if TYPE_CHECKING:
    from spacy.tokens import Doc


class Intent(Choice):
    """The purpose of one user turn; only statements and corrections carry facts to learn."""

    STATEMENT = "statement"
    QUESTION = "question"
    CORRECTION = "correction"
    FEEDBACK = "feedback"
    COMMAND = "command"
    SMALL_TALK = "small_talk"


# Word lists are lower case, apostrophes normalised to "'" before matching.
_WH = r"what|what's|whats|where|where's|who|who's|whom|whose|when|when's|why|how|how's|which"
_AUX = (r"do|does|did|can|could|will|would|is|are|was|were|am|have|has|had|should|shall|may|might|"
        r"must|isn't|aren't|wasn't|weren't|don't|doesn't|didn't|can't|couldn't|won't|wouldn't|"
        r"haven't|hasn't|shouldn't")
# the word after an inverted auxiliary that shows it is a question ("is my name ...", "do you ...")
_SUBJ = (r"i|you|u|he|she|it|we|they|my|your|his|her|its|our|their|the|this|that|these|those|"
         r"there|a|an|anyone|someone|anybody|somebody|everyone")
_QUESTION = re.compile(
    rf"^(?:(?:{_WH})\b|(?:{_AUX})\s+(?:{_SUBJ})\b"
    r"|(?:tell|remind|show)\s+me\b|any\s+idea\b|what\s+about\b|guess\s+(?:what|who|where)\b)",
)
_CORRECTION = re.compile(
    r"^(?:(?:sorry|oops|wait|sorry\s+no)\W+)?(?:no\b|nope\b|actually\b|that's\s+(?:wrong|not\s+(?:right|true|correct|it))|that\s+is\s+"
    r"(?:wrong|not\s+(?:right|true|correct))|that's\s+incorrect|incorrect\b|not\s+quite\b|"
    r"i\s+said\b|i\s+meant\b|i\s+mean\b|correction\s*:|to\s+correct\b|wrong\s*[,!.:;-]\s*\S)"
    r"|\bnot\s+\w[\w' -]{0,40}?\s+but\s+\w",
)
_FEEDBACK = (
    r"thanks(?:\s+a\s+lot)?|thank\s+you(?:\s+(?:so|very)\s+much)?|thx|ty|cheers|good\s+answer|"
    r"great\s+answer|nice\s+answer|wrong\s+answer|bad\s+answer|that's\s+(?:right|correct|true|"
    r"helpful|perfect|great)|that\s+is\s+(?:right|correct)|correct|exactly|great|perfect|nice|"
    r"awesome|well\s+done|good\s+job|helpful|not\s+helpful|useless|brilliant|spot\s+on|yes|yep|"
    r"right|👍|👎"
)
_VOCATIVE = r"(?:\s+(?:mate|man|dude|buddy|pal|kgrow|again))?"
_SMALL_TALK = (
    r"(?:hi|hello|hey|hiya|yo|howdy)(?:\s+(?:there|everyone|all|again|kgrow))?|sup|"
    r"good\s+(?:morning|afternoon|evening|night|day)|"
    r"how\s+are\s+(?:you|u)(?:\s+doing)?(?:\s+today)?|how's\s+it\s+going|how\s+is\s+it\s+going|"
    r"what's\s+up|whats\s+up|how\s+do\s+you\s+do|nice\s+to\s+meet\s+you|bye|goodbye|bye\s+bye|"
    r"see\s+(?:you|ya)(?:\s+later)?|later|ok|okay|k|cool|lol|haha|hmm+|oh|ah|well|sure|alright|"
    r"let\s+me\s+(?:think|see)"
)
# a leading feedback or greeting phrase and the separator after it
_FEEDBACK_LEAD = re.compile(rf"^(?:{_FEEDBACK})(?:\s*[,!.;:-]+\s*|\s+|$)")
_SMALL_TALK_LEAD = re.compile(rf"^(?:{_SMALL_TALK})(?:\s*[,!.;:?-]+\s*|\s+|$)")
_FILLER = re.compile(r"^(?:so|and|but|oh|um+|uh+|well|ok|okay|please)\s*,?\s+", re.IGNORECASE)
# an inverted auxiliary followed by a capitalised name: "Is Mary a doctor", "does Bob work here"
_AUX_NAME = re.compile(rf"^(?i:{_AUX})\s+[A-Z]")
# text that tries to change the assistant's behaviour rather than tell it something
_INSTRUCTION = re.compile(
    r"^\s*(?:system|assistant|developer|user)\s*:|<\|?(?:system|im_start|im_end)|"
    r"\b(?:ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(?:instructions?|prompts?|rules?|"
    r"everything|above|previous|guidelines)\b|\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+you\b|"
    r"\b(?:pretend|roleplay|role-play|jailbreak)\b|\bact\s+as\b|\bdeveloper\s+mode\b|"
    r"\bnew\s+instructions?\b|\bsystem\s+prompt\b",
    re.IGNORECASE,
)


def _norm(text: str) -> str:
    """Lower case, curly apostrophes straightened, outer whitespace dropped."""
    return text.strip().replace("’", "'").replace("‘", "'").lower()


def is_question(text: str) -> bool:
    """True for a question or an information request ("Where do I live?", "tell me my name")."""
    original = _FILLER.sub("", text.strip().replace("’", "'"))
    s = original.lower()
    if not s:
        return False
    if s.rstrip(" \t\"')").endswith("?"):
        return True
    return bool(_QUESTION.match(s) or _AUX_NAME.match(original))


def looks_like_instruction(text: str) -> bool:
    """True when the text tries to re-program the assistant ("ignore previous instructions")."""
    return bool(_INSTRUCTION.search(text))


def _strip_lead(pattern: re.Pattern[str], s: str) -> tuple[bool, str]:
    """Remove repeated leading phrases matching ``pattern``; say whether any was removed."""
    found = False
    while True:
        m = pattern.match(s)
        if not m or not m.group(0):
            return found, s
        found, s = True, s[m.end():].lstrip(" ,!.;:-")


def classify(text: str, doc: Doc | None = None) -> Intent:
    """Decide the intent of one utterance; ``doc`` (its parse) refines the aux-inversion check."""
    if not isinstance(text, str):
        raise BadInputError(f"utterance must be a string, got {type(text).__name__}")
    s = _norm(text)
    if not s:
        return Intent.SMALL_TALK
    if s.startswith("/"):
        return Intent.COMMAND
    bare = s.rstrip(" !.?")
    if re.fullmatch(rf"(?:{_FEEDBACK}){_VOCATIVE}(?:[\s,!.]+(?:{_FEEDBACK}){_VOCATIVE})*", bare):
        return Intent.FEEDBACK
    if _CORRECTION.search(s) and not re.fullmatch(r"no+(?:\s+thanks?)?|nope", bare) and not _no_as_determiner(doc):
        return Intent.CORRECTION
    had_feedback, rest = _strip_lead(_FEEDBACK_LEAD, s)
    _, rest = _strip_lead(_SMALL_TALK_LEAD, rest)
    if not rest.strip(" !.?"):
        return Intent.FEEDBACK if had_feedback else Intent.SMALL_TALK
    if re.fullmatch(rf"(?:(?:{_SMALL_TALK})[\s,!.?]*)+", rest):
        return Intent.SMALL_TALK
    if bare in ("no", "nope", "no thanks", "no thank you"):
        return Intent.FEEDBACK
    original = text.strip().replace("’", "'").replace("‘", "'")
    if len(original) == len(s):  # case matters for "Is Mary a doctor"
        rest = original[len(s) - len(rest):]
    if is_question(rest) or _inverted(doc):
        return Intent.QUESTION
    return Intent.STATEMENT


def _no_as_determiner(doc: Doc | None) -> bool:
    """ "No worries, ...", "No problem, ...": a leading "no" that qualifies a noun is no contradiction
    (a correction's "no" stands alone: "No, I live in Leeds"). Read from the parse, not a phrase list."""
    if doc is None or len(doc) < 2:
        return False
    first = doc[0]
    return first.lower_ == "no" and first.dep_ == "det" and first.head.pos_ in ("NOUN", "PROPN")


def _inverted(doc: Doc | None) -> bool:
    """A parse whose first sentence opens with an auxiliary that has a subject after it."""
    if doc is None or len(doc) < 2:
        return False
    first = next(iter(doc.sents))
    head = first[0]
    if head.pos_ != "AUX" or head.tag_ not in ("MD", "VBZ", "VBP", "VBD"):
        return False
    verb = head.head if head.dep_ in ("aux", "auxpass") else head
    return any(c.dep_ in ("nsubj", "nsubjpass", "expl") and c.i > head.i for c in verb.children)
