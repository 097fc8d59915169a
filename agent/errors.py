"""Errors raised by the agent; every message names the bad value and what would be valid.

Hierarchy (catch ``AgentError`` to handle them all; the CLI maps ``exit_code``):

- ``AgentError`` — base class.
  - ``BadInputError`` — a caller-supplied value is malformed (empty message, bad device...).
  - ``ModelLoadError`` — a model path is missing, not a causal LM, or cannot be converted.
  - ``ExtractionError`` — fact extraction failed in a way the caller should hear about.
  - ``StateError`` — a saved dialogue state cannot be restored.
"""
from __future__ import annotations


class AgentError(Exception):
    """Base class of every error the agent raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 1


class BadInputError(AgentError, ValueError):
    """A caller-supplied value is malformed; nothing was changed."""

    exit_code = 2


class ModelLoadError(AgentError):
    """A model could not be found or loaded as a causal language model."""

    exit_code = 3


class ExtractionError(AgentError):
    """Fact extraction failed."""

    exit_code = 1


class StateError(AgentError):
    """A saved dialogue state is unreadable or of an unknown version."""

    exit_code = 5
