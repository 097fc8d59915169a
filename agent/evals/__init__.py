"""Evaluations: scripted scenarios, feedback dialogues, knowledge fusion, and the extraction probe set."""
