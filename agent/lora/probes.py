"""Fixed prompt sets unrelated to any user's facts: locality probes (measured) and replay anchors (trained on).

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


# Replay anchors: other prompts of the same kinds, never measured. `kgrow learn` answers them with
# the base model and, while training on the facts, penalises the KL between the base model's and the
# adapted model's next-token distributions along those answers, so that the adapter learns "answer
# questions about this user" without learning "answer everything in one short sentence". Measured on
# SmolLM2-135M with 8 facts: without replay 30/30 probes changed; with this replay 10-11/30. They must
# stay disjoint from PROBES, or the locality figure would measure what was trained.
ANCHORS: tuple[str, ...] = (
    "What is the capital of Italy?",
    "What is the smallest planet in the solar system?",
    "Who painted the Mona Lisa?",
    "What is the freezing point of water in Fahrenheit?",
    "How many days are there in a week?",
    "What do bees make?",
    "What is the chemical symbol for iron?",
    "Which is the longest river in the world?",
    "What is the tallest mountain on Earth?",
    "Who was the first person to walk on the moon?",
    "What is 9 plus 6?",
    "What is 8 times 4?",
    "What is 81 divided by 9?",
    "What is 20 minus 7?",
    "Give me an antonym for cold.",
    "Translate 'good night' into French.",
    "List three kinds of trees.",
    "Write one sentence about the mountains.",
    "Name an animal that lives in the ocean.",
    "Name a vegetable that is green.",
    "Hi! What can you do?",
    "Good evening!",
    "Goodbye, see you later.",
    "Tell me something interesting.",
    "What is gravity?",
    "What does a barometer measure?",
    "How do I make a cup of tea?",
    "Why do leaves change color in autumn?",
    "What is a verb?",
    "What is an adjective?",
    "How can I stay focused while studying?",
    "What is a good way to start exercising?",
    "Is it good to eat vegetables every day?",
    "What is the speed of light?",
    "How many legs does a spider have?",
    "What is the opposite of up?",
    "Explain what a computer is.",
    "What is rain made of?",
    "How do airplanes fly?",
    "What is the main language spoken in Brazil?",
)
