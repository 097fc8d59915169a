"""A reply stream left half-read: asking again on the same thread neither hangs nor loses the first turn,
on the agent (scripted model) and on a real transformers model (a tiny random Llama)."""
from __future__ import annotations

import threading
import warnings

import pytest
from fakes_llm import ScriptedLLM
from tiny_models import byte_tokenizer, save_tiny_llama

from agent.generation.llm import CausalLM, LLMConfig, Message


def finishes(fn, timeout: float = 60.0):
    """``fn()`` run in a thread: its result, or a failure (not a hung test) when it does not return in time."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"deadlock: {fn} did not return within {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def agent(agent_factory):
    return agent_factory("alice", ScriptedLLM(["one two three four five six", "Second answer."]))


def test_abandoned_stream_then_chat_on_the_same_thread(agent):
    def scenario():
        stream = agent.stream("Tell me a story.")
        read = [next(stream), next(stream)]  # then the caller stops reading
        reply = agent.chat("And another one?")
        rest = list(stream)  # the abandoned turn was finished when the next began
        return read, reply, rest

    read, reply, rest = finishes(scenario)
    assert reply.text == "Second answer." and rest == []
    first, second = agent.state.turns[-2:]
    assert first.text == "Tell me a story." and first.reply == "".join(read).strip() == "one two"
    assert second.text == "And another one?" and second.reply == "Second answer."
    assert [t.index for t in agent.state.turns] == [0, 1]


def test_abandoned_stream_then_stream_again_and_switch_user(agent):
    def scenario():
        first = agent.stream("Tell me a story.")
        next(first)
        second = agent.stream("And another one?")
        next(second)
        agent.switch_user("bob")  # also finishes the open turn, under alice's name
        return agent.state.turns

    assert finishes(scenario) == []  # bob's session is new
    agent.switch_user("alice")
    assert [t.reply for t in agent.state.turns] == ["one", "Second"]


def test_another_thread_waits_for_the_open_turn(agent):
    stream = agent.stream("Tell me a story.")
    first = next(stream)
    done = threading.Event()
    other = threading.Thread(target=lambda: (agent.chat("And another one?"), done.set()), daemon=True)
    other.start()
    assert not done.wait(0.3)  # the other thread's turn waits for this one, as a lock would make it
    assert first + "".join(stream) == "one two three four five six"
    other.join(60)
    assert done.is_set() and agent.last_reply.text == "Second answer."


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> CausalLM:
    path = save_tiny_llama(byte_tokenizer(), tmp_path_factory.mktemp("tiny"), max_positions=1024)
    return CausalLM(LLMConfig(model=str(path), device="cpu", bf16=False, max_new_tokens=12))


def test_causal_lm_abandoned_stream_then_generate_again(tiny_lm):
    messages = [Message("user", "Where does Sam live?")]
    with warnings.catch_warnings():  # the KV cache goes in as `cache`, not the deprecated `past_key_values`
        warnings.simplefilter("error", FutureWarning)
        whole = "".join(tiny_lm.stream(messages))
        again = "".join(tiny_lm.stream(messages + [Message("assistant", whole), Message("user", "And Bob?")]))
    assert len(whole) >= 2 and again
    assert tiny_lm.last_stats.reused_tokens > 0  # the second prompt reused the first one's cache
    tiny_lm.reset_cache()

    def scenario():
        stream = tiny_lm.stream(messages)
        next(stream)  # abandoned after one piece, never closed
        return "".join(tiny_lm.stream(messages))

    assert finishes(scenario) == whole  # greedy: the same answer, from a cache left consistent
