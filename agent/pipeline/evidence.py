"""The answer policy's records from one turn: the question as the dialogue state read it, and the evidence recalled for it."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.answers.support import FIRST_PERSON, Evidence, Question
from agent.generation.prompt import display_name
from kb.errors import KBError

if TYPE_CHECKING:
    from agent.dialogue.state import Turn
    from agent.memory.recall import Memory
    from agent.profile.profile import Profile
    from kb import KnowledgeBase


#: relations whose object is a person of the user's world ("my sister is Mary": Mary is in it)
_PERSON_RELATIONS = frozenset({"sister", "brother", "mother", "father", "husband", "wife", "spouse", "friend", "son",
                               "daughter", "partner", "boss", "manager", "married_to", "child", "parent", "pet_name",
                               "name"})


def records(kb: KnowledgeBase, user: str, profile: Profile, adapter_active: bool, text: str, turn: Turn,
            memories: Sequence[Memory], asked: str) -> tuple[Question, list[Evidence]]:
    """The plain records for ``plan``: the question (with what the dialogue state found in it) and the
    recalled ``memories`` that may support an answer: facts, and what the user said, never the
    assistant's own replies (it may have invented them), the user's earlier questions, nor a turn
    whose facts were all superseded since ("My name is Kim." after "No, my name is Lee.")."""
    me = kb.resolve(user)
    first = bool(FIRST_PERSON.search(text))  # "tell me a joke" is not about the user
    said = " ".join(m.text for m in memories if m.role != "assistant").casefold()
    world = []
    for m in turn.mentions:
        ent = kb.resolve(m.entity)
        if ent == me or ent in world:
            continue
        if m.label == "PERSON" and re.search(rf"(?<!\w){re.escape(m.text.casefold())}(?!\w)", said):
            world.append(ent)  # a person the user told about ("my friend Chloe lives in York")
            continue
        try:
            facts = kb.about(ent, user=user, limit=8)
        except KBError:  # an entity the KB cannot look up is not in the user's world
            facts = []
        if any(f.subject == ent or (f.object == ent and f.relation in _PERSON_RELATIONS) for f in facts):
            world.append(ent)
    lang = profile.language.value if profile.language is not None else None
    q = Question(text, asked, display_name(profile), first, tuple(world), lang,
                 adapter_active)
    ev = []
    if profile.call_me:  # "call me Sam" is the user's own word on their name
        ev.append(Evidence(f"Your name is {profile.call_me}.", "name", me, profile.call_me))
    for m in memories:
        if m.fact is not None:
            ev.append(Evidence(m.fact.text, m.fact.relation, m.fact.subject, m.fact.object, m.score))
        elif m.role != "assistant" and m.speaker != "assistant" and not m.text.rstrip().endswith("?") and m.text != text \
                and not m.stale:  # a turn whose facts were all superseded no longer supports an answer
            ev.append(Evidence(m.text, "", "", "", m.score))
    return q, ev
