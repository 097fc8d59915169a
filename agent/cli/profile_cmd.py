"""`kgrow kb profile` and the chat's `/profile`: show and edit a user's personalisation profile.

``kgrow kb profile [--user U] [--json]`` shows the preferences (call_me, length, language, tone) and
the slots the agent knows from the user's facts; ``--set KEY=VALUE`` and ``--unset KEY`` (both
repeatable) edit the preferences under the writer lock. Every edit is validated before anything is
written, so an unknown user, an unknown key or a bad value changes nothing.
"""
from __future__ import annotations

import argparse

from agent.cli.errors import EXIT_OK, UsageError
from agent.cli.output import Output
from agent.profile.profile import AnswerLength, Language, Profile, ProfileKey, Tone

#: the default user of `kgrow chat`, and so of `kgrow kb profile`
DEFAULT_USER = "me"
#: what each key accepts, for help texts and /profile
KEY_HELP = (f"call_me (a name), length ({'|'.join(v.value for v in AnswerLength)}), "
            f"language ({', '.join(v.value for v in Language)}), tone ({'|'.join(v.value for v in Tone)})")


def add_args(c: argparse.ArgumentParser) -> None:
    """The options of `kgrow kb profile` (its parser is made by ``kb_args.build``)."""
    c.add_argument("--user", "-u", metavar="U", default=DEFAULT_USER,
                   help=f"whose profile (default: {DEFAULT_USER}, the default user of `kgrow chat`)")
    c.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="set_values",
                   help=f"set a preference (repeatable); keys: {KEY_HELP}")
    c.add_argument("--unset", metavar="KEY", action="append", default=[], dest="unset_keys",
                   help="put a preference back to its default (repeatable)")


def edited(profile: Profile, sets: list[str], unsets: list[str]) -> Profile:
    """``profile`` with the ``KEY=VALUE`` sets and the unsets applied; errors before any change."""
    for key in unsets:
        profile = profile.without(key)
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {item!r} is not KEY=VALUE; keys: {KEY_HELP}")
        profile = profile.with_value(key.strip(), value.strip())
    return profile


def pairs(profile: Profile) -> list[tuple[str, object]]:
    """Rows for display: the preferences, then each slot known from the user's facts."""
    rows: list[tuple[str, object]] = [("user", profile.user), ("addressed as", profile.display_name)]
    rows += [(k.value, profile.get(k) or "(not set)") for k in ProfileKey]
    rows += [(f"fact: {slot}", value) for slot, value in sorted(profile.slots.items())]
    return rows


def cmd_profile(args: argparse.Namespace, out: Output) -> int:
    from agent.cli.kb_open import open_kb
    from agent.profile.profile import ProfileStore, load_profile
    from kb import NotFoundError

    write = bool(args.set_values or args.unset_keys)
    with open_kb(args, write=write) as kb:
        if args.user not in kb.users():
            known = ", ".join(kb.users()) or "(none yet)"
            raise NotFoundError(f"unknown user {args.user!r}; known users: {known}")
        profile = load_profile(kb, args.user)
        if write:
            new = edited(profile, args.set_values, args.unset_keys)
            if new != profile:
                ProfileStore(kb.path).save(new.preferences())
            profile = new
    out.emit({**profile.to_dict(), "addressed_as": profile.display_name, "slots": dict(profile.slots)})
    out.kv(pairs(profile))
    return EXIT_OK


def slash(agent, arg: str) -> str:
    """``/profile``, ``/profile set KEY VALUE``, ``/profile unset KEY``: the text to show."""
    from agent.errors import BadInputError

    try:
        return _slash(agent, arg)
    except BadInputError as e:  # unknown key or bad value: nothing was changed
        return f"error: {e}"


def _slash(agent, arg: str) -> str:
    from agent.cli.output import cell

    verb, _, rest = arg.partition(" ")
    if not verb:
        width = max(len(k) for k, _ in pairs(agent.profile))
        return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in pairs(agent.profile))
    if verb == "set":
        key, _, value = rest.strip().partition(" ")
        if not key or not value.strip():
            return f"usage: /profile set KEY VALUE; keys: {KEY_HELP}"
        agent.set_profile(agent.profile.with_value(key, value.strip()))
        return f"{ProfileKey.parse(key).value} = {agent.profile.get(key)}"
    if verb == "unset":
        key = rest.strip()
        if not key:
            return f"usage: /profile unset KEY; keys: {KEY_HELP}"
        agent.set_profile(agent.profile.without(key))
        return f"{ProfileKey.parse(key).value} is back to its default ({agent.profile.get(key) or 'not set'})"
    return f"unknown /profile command {verb!r}; use /profile, /profile set KEY VALUE or /profile unset KEY"
