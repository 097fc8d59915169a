"""The fixed locality probe set: prompts unrelated to any user's facts, whose answers a new adapter must keep.

Why a fixed list in code: the fraction of changed probe answers is only comparable between adapters,
users and versions when every run asks exactly the same prompts, in the same order. The prompts span
what a chat agent is asked besides personal facts (general knowledge, arithmetic, instructions,
small talk, definitions, advice) and name no person, so training on one user's facts has no business
changing their answers. Editing this list changes every locality number: bump ``PROBE_SET_VERSION``.
"""
from __future__ import annotations

#: recorded in each adapter's metadata next to its locality figure
PROBE_SET_VERSION = 1

PROBES: tuple[str, ...] = (
    # general knowledge
    "What is the capital of France?",
    "What is the largest planet in the solar system?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "How many continents are there?",
    "What gas do plants absorb from the air?",
    "What is the chemical symbol for gold?",
    "Which ocean is the largest?",
    # arithmetic
    "What is 7 plus 5?",
    "What is 12 times 3?",
    "What is 100 divided by 4?",
    "What is 15 minus 9?",
    # instructions
    "Give me a synonym for happy.",
    "Translate 'thank you' into Spanish.",
    "List three primary colors.",
    "Write one sentence about the sea.",
    "Spell the word cat backwards.",
    "Name a fruit that is yellow.",
    # greetings and small talk
    "Hello! How are you today?",
    "Good morning!",
    "Thanks for your help.",
    "Can you tell me a joke?",
    # definitions and how-to
    "What is photosynthesis?",
    "What does a thermometer measure?",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "What is a noun?",
    # advice and opinion
    "How can I sleep better?",
    "What is a good way to learn a new language?",
    "Is it healthy to drink water every day?",
)
