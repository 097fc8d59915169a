"""Template sentences of the answer policy: the abstention ("You haven't told me where you live.") and a
memory told back in the second person ("Sam lives in Lisbon." -> "You live in Lisbon.")."""
from __future__ import annotations

import re

#: the abstention in the user's profile language where a template exists (English: built from the question)
ABSTENTIONS: dict[str, str] = {
    "French": "Vous ne me l'avez pas encore dit.",
    "German": "Das haben Sie mir noch nicht gesagt.",
    "Spanish": "Todavía no me lo has dicho.",
    "Italian": "Non me l'hai ancora detto.",
    "Portuguese": "Ainda não me disseste isso.",
    "Dutch": "Dat heb je me nog niet verteld.",
}
#: the English abstention when the question cannot be turned into a clause
GENERIC = "You haven't told me that yet."

_AUX = frozenset({"do", "does", "did", "am", "is", "are", "was", "were", "have", "has", "can", "will"})
_WH = frozenset({"what", "where", "when", "who", "whom", "whose", "which", "how", "why"})
_SWAP = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are", "i'm": "you're"}
_SWAP_BACK = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are",
              "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd"}
_DET = frozenset({"my", "your", "his", "her", "our", "their", "the", "a", "an"})
_MODIFIERS = frozenset({"best", "older", "younger", "little", "big", "full", "last", "first", "middle", "favorite",
                        "favourite", "current", "home", "phone", "email", "new", "old", "eldest", "oldest", "youngest"})
_PAST = {"go": "went", "grow": "grew", "have": "had", "do": "did", "meet": "met", "buy": "bought", "get": "got",
         "take": "took", "see": "saw", "make": "made", "come": "came", "leave": "left", "begin": "began",
         "teach": "taught", "write": "wrote", "drive": "drove", "win": "won", "find": "found", "lose": "lost",
         "speak": "spoke", "give": "gave", "run": "ran", "eat": "ate", "read": "read", "think": "thought"}
_LEAD = re.compile(r"(?i)^(?:(?:thanks|thank you|ok|okay|so|well|oh|hey|hi|and|but|also|please)\b[,!.]?\s*)+")
_CONTRACTIONS = re.compile(r"(?i)\b(what|where|when|who|how)'s\b")


def abstention(question: str, language: str | None = None) -> str:
    """One sentence saying memory has nothing on ``question``: "You haven't told me where you live."."""
    if language in ABSTENTIONS:
        return ABSTENTIONS[language]
    clause = _clause(question)
    return f"You haven't told me {clause}." if clause else GENERIC


def _clause(question: str) -> str | None:
    """The question as an embedded clause in the second person: "Where does my sister live?" ->
    "where your sister lives"; None when its form is not one of the common ones."""
    words = _CONTRACTIONS.sub(r"\1 is", _LEAD.sub("", question.strip())).rstrip("?!. ").split()
    if not words:
        return None
    low = [w.lower() for w in words]
    aux_at = next((i for i, w in enumerate(low) if w in _AUX), None)
    if aux_at is None or aux_at > 3 or (aux_at and low[0] not in _WH):
        return None
    wh, aux, after = words[:aux_at], low[aux_at], words[aux_at + 1:]
    n = _subject_length(after)
    if n == 0:
        return None
    subject = [_swap(w) for w in after[:n]]
    rest = [_swap(w) for w in after[n:]]
    you = subject == ["you"]
    lead = [wh[0].lower()] + wh[1:] if wh else ["whether"]
    if aux in ("do", "does", "did"):
        if not rest:
            return None
        verb = rest[0].lower()
        rest[0] = _past(verb) if aux == "did" else verb if you else _third(verb)
        body = subject + rest
    elif aux in ("am", "is", "are", "was", "were"):
        be = ("were" if aux in ("was", "were") else "are") if you else ("was" if aux == "was" else "is")
        body = subject + [be] + rest if wh else subject + [be] + rest
    else:  # have, has, can, will
        body = subject + [("have" if you else "has") if aux in ("have", "has") else aux] + rest
    return " ".join(lead + body)


def _subject_length(words: list[str]) -> int:
    """How many of ``words`` form the subject: "I", or "my best friend's dog", or a name ("Tom's sister")."""
    if not words:
        return 0
    first = words[0].lower()
    if first in ("i", "you", "he", "she", "we", "they", "it"):
        return 1
    if first not in _DET and not words[0][:1].isupper():
        return 0
    i = 1 if first in _DET else 0
    while i < len(words) and (words[i].lower() in _MODIFIERS or re.search(r"['’]s$", words[i])):
        i += 1
    if first not in _DET and i > 0:  # a name with possessives: "Tom's sister" -> Tom's + sister
        return min(i + 1, len(words)) if i < len(words) else i
    return min(i + 1, len(words)) if first in _DET else 1


def _swap(word: str) -> str:
    low = word.lower()
    return _SWAP.get(low, word)


def _third(verb: str) -> str:
    if verb in ("have",):
        return "has"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    if re.search(r"(?:s|x|z|ch|sh|o)$", verb):
        return verb + "es"
    return verb + "s"


def _past(verb: str) -> str:
    if verb in _PAST:
        return _PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ied"
    return verb + "ed"


def second_person(text: str, name: str) -> str:
    """A memory about the user told back to them: "Sam's sister is Mary." -> "Your sister is Mary.",
    "Sam lives in Lisbon." -> "You live in Lisbon."; others' memories are returned as they are."""
    t = text.strip()
    if re.match(r"(?i)(?:i|my|i'm|i've)\b", t):  # the user's own words: "I adopted..." -> "You adopted..."
        t = re.sub(r"(?i)\byou was\b", "you were", " ".join(_SWAP_BACK.get(w.lower(), w) for w in t.split()))
        return t[:1].upper() + t[1:]
    if not name:
        return t
    n = re.escape(name)
    t = re.sub(rf"^{n}['’]s\b", "Your", t)
    t = re.sub(rf"\b{n}['’]s\b", "your", t)
    for third, second in (("is", "are"), ("was", "were"), ("has", "have")):
        t = re.sub(rf"^{n} {third}\b", f"You {second}", t)
    m = re.match(rf"^{n} (\w+?)(ies|es|s)\b", t)
    if m:
        stem = m.group(1) + ("y" if m.group(2) == "ies" else "e" if m.group(2) == "es" and not re.search(
            r"(?:s|x|z|ch|sh|o)$", m.group(1)) else "")
        t = f"You {stem}" + t[m.end():]
    return t[:1].upper() + t[1:] if t else t
