"""Readers of chat histories into ChatTurns: kgrow JSONL, ChatGPT's conversations.json, 'Name: text' transcripts.

Each reader returns turns grouped in sessions and names the session, line and field of anything
malformed. ChatGPT exports are trees (a message edited or regenerated starts a branch): the
conversation's main thread is the path from ``current_node`` back to the root, as ChatGPT shows it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from agent.choices import Choice
from agent.errors import BadInputError
from agent.memory.ingest import ASSISTANT, ChatTurn, parse_time


class ChatFormat(Choice):
    """The chat-history formats `kgrow kb import-chat` reads."""

    JSONL = "jsonl"  # one {speaker, text, time, session, source_id} object a line
    CHATGPT = "chatgpt"  # ChatGPT's conversations.json export
    TRANSCRIPT = "transcript"  # plain 'Name: text' lines

    @classmethod
    def infer(cls, path: Path) -> "ChatFormat":
        """From the file: a JSON array is a ChatGPT export, .jsonl is JSONL, anything else a transcript."""
        if path.suffix == ".jsonl":
            return cls.JSONL
        with path.open("r", encoding="utf-8", errors="replace") as f:
            head = f.read(64).lstrip()
        return cls.CHATGPT if head.startswith("[") else cls.TRANSCRIPT


def read_chat(path: str | Path, fmt: ChatFormat | str | None = None, *, date: object = None) -> list[ChatTurn]:
    """Every turn of the history in ``path`` (format inferred unless given); ``date`` is the time of a
    transcript's turns, which carry none."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"chat file {str(p)!r} does not exist")
    kind = ChatFormat.infer(p) if fmt is None else ChatFormat.parse(fmt)
    if kind is ChatFormat.JSONL:
        return list(_jsonl(p))
    if kind is ChatFormat.CHATGPT:
        return list(_chatgpt(p))
    return list(_transcript(p, date))


def _jsonl(path: Path) -> Iterator[ChatTurn]:
    with path.open("r", encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInputError(f"{path.name} line {no}: not JSON ({e.msg} at column {e.colno})") from None
            where = f"{path.name} line {no}" + (f" (session {rec.get('session')!r})"
                                                if isinstance(rec, dict) and rec.get("session") else "")
            turn = ChatTurn.coerce(rec, where)
            if turn.time is not None:
                parse_time(turn.time, where)
            yield turn


def _chatgpt(path: Path) -> Iterator[ChatTurn]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path.name}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list):
        raise BadInputError(f"{path.name}: a ChatGPT export is a JSON list of conversations, "
                            f"got {type(data).__name__}")
    for n, conv in enumerate(data, 1):
        where = f"{path.name} conversation {n}"
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            raise BadInputError(f"{where}: field 'mapping' must be an object of node id -> node")
        sid = str(conv.get("conversation_id") or conv.get("id") or f"chatgpt-{n}")
        where = f"{where} (session {conv.get('title') or sid!r})"
        yield from _thread(conv, sid, where)


def _thread(conv: dict, sid: str, where: str) -> Iterator[ChatTurn]:
    mapping: dict = conv["mapping"]
    node_id = conv.get("current_node")
    if node_id is None:  # older exports: follow the last child from the root
        roots = [k for k, v in mapping.items() if isinstance(v, dict) and v.get("parent") is None]
        node_id = roots[0] if roots else None
        while node_id is not None and mapping.get(node_id, {}).get("children"):
            node_id = mapping[node_id]["children"][-1]
    path: list[str] = []
    seen: set[str] = set()
    while node_id is not None:
        if node_id in seen:
            raise BadInputError(f"{where}: node {node_id!r} is its own ancestor")
        node = mapping.get(node_id)
        if not isinstance(node, dict):
            raise BadInputError(f"{where}: node {node_id!r} is referenced but missing from 'mapping'")
        seen.add(node_id)
        path.append(node_id)
        node_id = node.get("parent")
    default_time = conv.get("create_time")
    for nid in reversed(path):
        msg = mapping[nid].get("message")
        if msg is None:
            continue  # the root and deleted nodes carry no message
        role = (msg.get("author") or {}).get("role")
        if role not in ("user", "assistant"):
            continue  # system and tool messages are not part of the conversation
        content = msg.get("content") or {}
        parts = content.get("parts")
        if parts is None and "text" in content:
            parts = [content["text"]]
        if not isinstance(parts, list):
            raise BadInputError(f"{where}, node {nid!r}: field 'content.parts' must be a list")
        text = "\n".join(p for p in parts if isinstance(p, str)).strip()
        if not text:
            continue  # images and empty regenerations
        at = msg.get("create_time") or default_time
        yield ChatTurn("user" if role == "user" else ASSISTANT, text, at, sid, f"{sid}/{nid}")


_SPEAKER = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?([^\s:][^:]{0,40}?)\s*:\s+(.*)$")


def _transcript(path: Path, date: object) -> Iterator[ChatTurn]:
    if date is not None:
        parse_time(date, "--date")
    sid = f"transcript-{path.stem}"
    last: ChatTurn | None = None
    with path.open("r", encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _SPEAKER.match(line)
            if m:
                if last is not None:
                    yield last
                last = ChatTurn(m.group(1).strip(), m.group(2).strip(), date, sid, f"{sid}/line/{no}")
            elif last is not None:  # a continuation line belongs to the turn above
                last = ChatTurn(last.speaker, f"{last.text}\n{line.strip()}", date, sid, last.source_id)
            else:
                raise BadInputError(f"{path.name} line {no}: expected 'Name: text', got {line.strip()[:60]!r}")
    if last is not None:
        yield last
