"""The grounding checker, the answer policy and its templates, on hand-labelled answers (incl. issue 14's)."""
from __future__ import annotations

import pytest

from agent.evals.grounded import is_abstention, judge
from agent.generation.model import Capabilities, GenerationStats
from agent.pipeline.feedback import Candidate
from agent.answers.grounding import GroundingConfig, grounded, support_keys, unsupported
from agent.answers.phrasing import abstention, second_person
from agent.answers.support import (Action, Evidence, Plan, Question, SupportConfig, Topic, answer_plan, cut_before, ground,
                           ground_candidates, plan, topic)

# (answer, support: memories + question, the unsupported claims a person finds), labelled by hand.
# The first block is every answer quoted in issue 14; the feedback ones are the eval's first regenerations.
LABELLED = [
    ("Lena was born in Graz, Croatia.", ["Lena was born in Graz.", "Where was Lena born?"], {"croatia"}),
    ("Fay's sister is Anna, a famous actress who has been performing for over 20 years.",
     ["Fay's sister is Anna.", "Who is Fay's sister?"], {"20"}),
    ("Ana is a person born in Berlin, Germany.", ["Ana lives in Berlin.", "Where does Ana live?"], {"germany"}),
    ("Lee is a person, not just their name. Lee is a fictional character based on the real-life person named Rae.",
     ["Lee's name is Lee.", "What is Lee's name?"], {"rae"}),
    ("Dana lives in a small town called Ashwood, which is nestled between the mountains of Willow Creek.",
     ["Where does Dana live?", "Dana"], {"ashwood", "willow", "creek"}),
    ("Pizza is a type of Italian food that's often enjoyed in the UK.", ["Cara's favorite food is pizza."],
     {"italian", "uk"}),
    ("Hal was born in Porto, Portugal.", ["Hal was born in Porto."], {"portugal"}),
    ("Pam's mother is Martha, a famous American actress and philanthropist.", ["Pam's mother is Martha."],
     {"american"}),
    ("Mary lives in Rome, Italy.", ["Mary lives in Rome."], {"italy"}),
    ("Sam was born on July 5th, 1989.", ["Sam was born on July 4, 1988."], {"5", "1989"}),
    # supported: every name, number and date is in the memories or the question
    ("Eli's dog is Max.", ["Eli's dog is called Max."], set()),
    ("Gus's birthday is 06-05.", ["Gus's birthday is June 5."], set()),
    ("Ida is 31 years old.", ["Ida is 31 years old."], set()),
    ("Jon studies at Stanford University.", ["Jon studies at Stanford."], set()),
    ("John works at Apple Inc.", ["John works at Apple."], set()),
    ("Green is a color that Cara loves to wear.", ["Cara's favorite color is green."], set()),
    ("Ben's friend, Quin, lives in Bergen.", ["Ben lives in Bergen.", "Quin's friend is Ben."], set()),
    ("Your sister Mary lives in Rome.", ["Sam's sister is Mary.", "Mary lives in Rome."], set()),
    ("Sam was born on July 4th, 1988.", ["Sam was born on July 4, 1988."], set()),
    ("You were born on 1988-07-04.", ["Carol was born on 1988-07-04."], set()),
    ("There are seven days in a week.", ["How many days are in a week?", "A week has 7 days."], set()),
]


@pytest.mark.parametrize("answer,support,expected", LABELLED, ids=[a[:32] for a, _, _ in LABELLED])
def test_checker_finds_exactly_the_unsupported_claims(nlp, answer, support, expected):
    found = {k for c in unsupported(answer, support, nlp) for k in c.missing}
    assert found == expected


def test_grounded_needs_the_value_and_nothing_invented(nlp):
    support = ["Lena was born in Graz.", "Where was Lena born?"]
    assert grounded("Lena was born in Graz.", ["Graz"], support, nlp)
    assert not grounded("Lena was born in Graz, Croatia.", ["Graz"], support, nlp)  # contains the value, invents
    assert not grounded("Lena was born in Vienna.", ["Graz"], support + ["Lena was born in Vienna."], nlp)


def test_support_keys_normalise_numbers_dates_and_case():
    keys = support_keys(["Sam is seven.", "Born on the 4th of July", "Lives in PARIS"])
    assert {"7", "4", "july", "paris", "7-4", "4-7"} <= keys


def test_config_rejects_an_unknown_label():
    with pytest.raises(ValueError, match="unknown entity label 'CITY'.*valid labels: .*GPE"):
        GroundingConfig(labels=frozenset({"CITY"}))


@pytest.mark.parametrize("question,sentence", [
    ("Where do I live?", "You haven't told me where you live."),
    ("Where do I work?", "You haven't told me where you work."),
    ("What is my dog's name?", "You haven't told me what your dog's name is."),
    ("How old am I?", "You haven't told me how old you are."),
    ("Where does my sister live?", "You haven't told me where your sister lives."),
    ("Which university did I go to?", "You haven't told me which university you went to."),
    ("Do I have any pets?", "You haven't told me whether you have any pets."),
    ("Tell me something nice", "You haven't told me that yet."),
])
def test_abstention_is_one_sentence_built_from_the_question(question, sentence):
    assert abstention(question) == sentence
    assert is_abstention(sentence)


def test_abstention_in_the_profile_language_where_a_template_exists():
    assert abstention("Where do I live?", "French") == "Vous ne me l'avez pas encore dit."
    assert abstention("Where do I live?", "Korean") == "You haven't told me where you live."  # no template


def test_second_person_rephrases_the_users_own_memories():
    assert second_person("Sam lives in Lisbon.", "Sam") == "You live in Lisbon."
    assert second_person("Sam's sister is Mary.", "Sam") == "Your sister is Mary."
    assert second_person("Mary lives in Rome.", "Sam") == "Mary lives in Rome."
    assert second_person("I was born in Porto.", "Sam") == "You were born in Porto."  # the user's own words


def test_a_name_question_answered_without_the_name_gets_the_memory_that_says_it(nlp):
    memory = Evidence("I adopted a rescue greyhound last week, his name is Biscuit.", "", "", "")
    p = plan(_q("What is my dog called?"), [memory], nlp)
    assert p.names == ("Biscuit",)
    assert ground("Sam's dog is a Greyhound.", p, nlp) == "You adopted a rescue greyhound last week, his name is Biscuit."
    assert ground("Your dog is called Biscuit.", p, nlp) == "Your dog is called Biscuit."


def test_the_users_own_name_in_memory_does_not_let_a_name_answer_without_the_asked_name_through(nlp):
    memories = [Evidence("I adopted a rescue greyhound last week, his name is Biscuit.", "", "", ""),
                Evidence("Sam has a pet named Biscuit.", "pet_name", "sam", "biscuit"),
                Evidence("Sam's name is Sam.", "name", "sam", "sam")]
    p = plan(_q("What is my dog called?"), memories, nlp)
    assert p.names == ("Biscuit",)
    assert "Biscuit" in ground("Sam's dog is a Greyhound.", p, nlp)


def _q(text: str, first: bool = True, world: tuple[str, ...] = ()) -> Question:
    return Question(text, text.replace("I ", "Sam ").replace("my ", "Sam's "), "Sam", first, world)


LISBON = [Evidence("Sam lives in Lisbon.", "lives_in", "sam", "lisbon", 0.5)]


@pytest.mark.parametrize("text,memories,action", [
    ("Where do I live?", [], Action.ABSTAIN),  # empty memory
    ("Where do I work?", [], Action.ABSTAIN),
    ("Where do I work?", LISBON, Action.ABSTAIN),  # only "I live in Lisbon."
    ("What is my dog's name?", LISBON, Action.ABSTAIN),
    ("When was I born?", [Evidence("Sam was born in Porto.", "born_in", "sam", "porto")], Action.ABSTAIN),
    ("How old is my sister?", [Evidence("Sam's sister is Mary.", "sister", "sam", "mary")], Action.ABSTAIN),
    ("Where do I live?", LISBON, Action.ANSWER),
    ("What is my sister's name?", [Evidence("Sam's sister is Mary.", "sister", "sam", "mary")], Action.ANSWER),
    ("What is my dog called?", [Evidence("I adopted a rescue greyhound last week, his name is Biscuit.", "", "", "")],
     Action.ANSWER),
])
def test_plan_abstains_unless_a_memory_covers_the_question(nlp, text, memories, action):
    p = plan(_q(text), memories, nlp)
    assert p.action is action
    if action is Action.ABSTAIN:
        assert p.text.startswith("You haven't told me") and "Lisbon" not in p.text


def test_general_questions_go_to_the_bare_model(nlp):
    assert topic(_q("What is the capital of France?", first=False)) is Topic.GENERAL
    assert topic(_q("What is the largest planet in our solar system?", first=False)) is Topic.GENERAL
    assert topic(_q("Can you tell me the capital of Italy?", first=False)) is Topic.GENERAL
    assert topic(_q("Where does Mary live?", first=False, world=("mary",))) is Topic.USER
    assert topic(_q("Where do I live?", first=False)) is Topic.USER
    assert plan(_q("What is the capital of France?", first=False), LISBON, nlp).action is Action.BARE


def test_ground_cuts_at_the_first_unsupported_claim(nlp):
    p = Plan(Topic.USER, Action.ANSWER, support=("Lena was born in Graz.", "Where was Lena born?"),
             fallback="Lena was born in Graz.")
    assert ground("Lena was born in Graz, Croatia.", p, nlp) == "Lena was born in Graz."
    fay = Plan(Topic.USER, Action.ANSWER, support=("Fay's sister is Anna.",), fallback="Your sister is Anna.")
    assert ground("Fay's sister is Anna, a famous actress who has been performing for over 20 years.", fay,
                  nlp) == "Fay's sister is Anna."
    # nothing worth keeping before the claim: the best memory, in the second person
    pizza = Plan(Topic.USER, Action.ANSWER, support=("Cara's favorite food is pizza.",), fallback="Your favorite food is pizza.")
    assert ground("Pizza is a type of Italian food.", pizza, nlp) == "Your favorite food is pizza."
    assert ground("Your sister Mary lives in Rome.", Plan(Topic.USER, Action.ANSWER, support=(
        "Sam's sister is Mary.", "Mary lives in Rome.")), nlp) == "Your sister Mary lives in Rome."
    off = SupportConfig(cut_unsupported=False)
    assert ground("Lena was born in Graz, Croatia.", p, nlp, off) == "Lena was born in Graz, Croatia."


def test_feedback_candidates_are_grounded_like_chat_answers(nlp):
    # the feedback eval's ungrounded first regenerations: an invention before the corrected value leaves
    # no clause to keep, so the candidate becomes the fact covering the question, told back to the user
    berlin = answer_plan([Evidence("Ana lives in Berlin.", "lives_in", "ana", "berlin"),
                          Evidence("Ana's friend is Bo.", "friend", "ana", "bo")], "Where does Ana live?", "Ana", nlp)
    assert ground('Ana is a fictional character from the movie "The Masked Laundress" and she lives in Berlin.',
                  berlin, nlp) == "You live in Berlin."
    assert ground("Ana lives in Berlin.", berlin, nlp) == "Ana lives in Berlin."  # grounded: left alone
    pizza = answer_plan([Evidence("Dev's favorite food is pizza.", "favorite_food", "dev", "pizza")],
                        "What is Dev's favorite food?", "Dev", nlp)
    assert ground("Pizza is a type of Italian food that's often enjoyed around the world.", pizza,
                  nlp) == "Your favorite food is pizza."
    # a name question answered with no name its facts state (here the old, corrected one) gets the fact
    cat = answer_plan([Evidence("Tia's cat is called Nala.", "pet_name", "tia", "nala")],
                      "What is Tia's cat's name?", "Tia", nlp)
    assert cat.names == ("Nala",)
    assert ground("Tia's cat is a cat named Luna.", cat, nlp) == "Your cat is called Nala."
    # the re-ranker sees grounded candidates only; a fallback gets the batch's highest log-prob
    cands = [Candidate("Berlin is Ana's home.", -0.2, 5), Candidate("Ana lives in Paris.", -0.9, 5)]
    assert [(c.text, c.logprob) for c in ground_candidates(cands, berlin, nlp)] == [
        ("Berlin is Ana's home.", -0.2), ("You live in Berlin.", -0.2)]
    # without the pipeline (or facts) there is no fallback: the candidate stays for the re-ranker
    bare = answer_plan(["Ana lives in Berlin."], "Where does Ana live?", "Ana")
    assert bare.fallback == "" and ground("Pizza is Italian.", bare, nlp) == "Pizza is Italian."


def test_cut_before_keeps_whole_clauses():
    text = "Hal was born in Porto, Portugal."
    assert cut_before(text, text.index("Portugal")) == "Hal was born in Porto."
    text = "Fay's sister is Anna, a famous actress who has been performing for over 20 years."
    assert cut_before(text, text.index("20"), text.index("Anna") + 4) == "Fay's sister is Anna."
    assert cut_before("Pizza is Italian.", 9) == ""


def test_judge_reports_abstention_and_claims(nlp):
    g = judge("Lena was born in Graz, Croatia.", True, ["Lena was born in Graz."], nlp)
    assert g.unsupported == ("Croatia",) and not g.grounded and not g.abstained
    assert judge("You haven't told me where you live.", True, ["Where do I live?"], nlp).abstained


# --------------------------------------------------------------------------- the agent (issue 14's acceptance)


class WorldLLM:
    """EchoLLM's protocol; answers a bare question from a tiny world-knowledge table and a question with
    facts by echoing its first numbered fact plus an invented country (as the 135M model does)."""

    WORLD = {"capital of france": "The capital of France is Paris."}

    def __init__(self) -> None:
        from agent.generation.fakes import EchoLLM

        self._echo = EchoLLM()
        self._stats = GenerationStats()
        self.prompts: list[list] = []

    id = "world-llm"
    capabilities = Capabilities(sampling=True)  # its echo's scripted candidates; no fusion, no KV cache

    @property
    def last_stats(self):
        return self._stats

    def stream(self, messages, max_new_tokens=None):
        self.prompts.append(list(messages))
        last = messages[-1].content
        fact = next((line[4:].strip() for line in last.splitlines() if line.startswith("[1] ")), "")
        reply = fact.rstrip(".") + ", Croatia." if fact else next(
            (a for k, a in self.WORLD.items() if k in last.lower()), "Ashwood, in Willow Creek.")
        reply = " ".join(reply.split(" ")[:max_new_tokens]) if max_new_tokens is not None else reply
        self._stats = GenerationStats(new_tokens=len(reply.split()))
        yield reply

    def sample_candidates(self, messages, **kwargs):
        return self._echo.sample_candidates(messages, **kwargs)

    def complete(self, prompt: str, max_new_tokens: int = 128) -> str:
        return "[]"

    def reset_cache(self) -> None:
        self._echo.reset_cache()


def test_empty_memory_abstains(agent_factory):
    agent = agent_factory("dana", WorldLLM())
    assert agent.chat("Where do I live?").text == "You haven't told me where you live."
    reply = agent.chat("Where do I work?")
    assert reply.text == "You haven't told me where you work." and not reply.used_facts


def test_after_only_lisbon_other_questions_abstain_and_general_ones_go_bare(agent_factory):
    llm = WorldLLM()
    agent = agent_factory("sam", llm)
    agent.chat("I live in Lisbon.")
    for question in ("Where do I work?", "What is my dog's name?"):
        reply = agent.chat(question)
        assert is_abstention(reply.text) and "Lisbon" not in reply.text, reply.text
    reply = agent.chat("What is the capital of France?")
    assert "Paris" in reply.text and not reply.used_facts
    assert "Lisbon" not in " ".join(m.content for m in llm.prompts[-1])  # no facts cited
    reply = agent.chat("Where do I live?")  # answered from memory; the invented country is cut
    assert reply.text == "Sam lives in Lisbon." and reply.used_facts


@pytest.mark.integration
def test_acceptance_on_the_packaged_models(tmp_path, model_cache, nlp):
    """Issue 14's acceptance checks on SmolLM2-135M + MiniLM (about a minute on a CPU)."""
    from agent.generation.llm import CausalLM, LLMConfig
    from agent.pipeline.loop import Agent
    from kb import KBConfig, KnowledgeBase, SentenceTransformerEmbedder

    llm = CausalLM(LLMConfig(device="cpu", cache_dir=str(model_cache)))
    kb = KnowledgeBase.open(tmp_path / "kb", embedder=SentenceTransformerEmbedder(), config=KBConfig(show_progress=False))
    with Agent(kb, llm, "sam", nlp=nlp, owns_kb=True) as agent:
        for q in ("Where do I live?", "Where do I work?"):
            assert is_abstention(agent.chat(q).text)
        agent.chat("I live in Lisbon.")
        for q in ("Where do I work?", "What is my dog's name?"):
            text = agent.chat(q).text
            assert is_abstention(text) and "Lisbon" not in text, text
        assert "Paris" in agent.chat("What is the capital of France?").text
        agent.chat("I adopted a rescue greyhound last week, his name is Biscuit.")
        text = agent.chat("What is my dog called?").text
        assert "Biscuit" in text and not unsupported(text, ["Sam has a greyhound named Biscuit.", "Sam"], nlp), text
