"""One canonical form of an email address: what accounts are stored, found and throttled by.

Python's `lower()` and PostgreSQL's `lower()` disagree on some characters (`İ`), so an address compared
by one and counted by the other could find an account while missing its throttle. Every comparison goes
through `canonical()` instead: NFKC (compatibility forms such as fullwidth letters become the plain ones),
then Unicode case folding (`ß` and `ss` are one address), then NFKC again (folding can leave decomposed
sequences). The database stores that form in `app_user.email_canonical` (unique) and the gateway only ever
compares canonical forms it computed itself.

What an address may contain, after canonicalisation (a principled subset, not a full RFC 5321 parser):
- one `@`, a domain with a dot, no spaces, commas, semicolons, angle brackets or quotes (one address,
  never a list);
- only printable characters (`str.isprintable`: no controls, no invisible format characters such as
  zero-width joiners or direction overrides, no separators);
- beyond ASCII, only letters and script-specific marks: no foreign digits, symbols or punctuation, and no
  generic combining marks, which after NFKC composition are only left to make a letter look like
  another (`i` + U+0307 renders as `i`);
- the local part, and the domain, each in one script, as UTS #39's "Highly Restrictive" level defines it
  (ASCII letters are Latin; Han may go with Hiragana and Katakana, with Bopomofo, or with Hangul, and
  each of those combinations with Latin). The script of a character is the first word of its Unicode
  name (`CYRILLIC SMALL LETTER I` → CYRILLIC): the standard library has no script property, and names
  are exact for the letters that matter here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_EMAIL = 254
REQUIRED = "email is required"
MALFORMED = "email must look like name@example.edu"

_SHAPE = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\".]+(\.[^@\s,;<>\".]+)+$")
_HAN_COMBINATIONS = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
_REFUSED = "refused"
# Two rounds reach the fixed point for every code point; the bound only guards against a Unicode surprise.
_MAX_ROUNDS = 4


def canonical(address: str) -> str:
    """The form an address is stored, found and counted by (of an address already validated, or of any
    text: a look-up by the canonical form of garbage simply finds nothing)."""
    form = address.strip()
    # Normalising can expose spaces to strip or letters to fold again (U+00AF becomes a space and a
    # combining macron): repeat until nothing changes, so the canonical form of a canonical form is itself.
    for _ in range(_MAX_ROUNDS):
        again = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", form).casefold()).strip()
        if again == form:
            break
        form = again
    return form


def digest(address: str) -> str:
    """The canonical address as a throttle key: Redis holds no addresses."""
    return hashlib.sha256(canonical(address).encode()).hexdigest()


def _script(char: str) -> str | None:
    """The script a character counts for, None for script-neutral ASCII, `_REFUSED` for what no
    address may hold."""
    if char.isascii():
        return "LATIN" if char.isalpha() else None
    if unicodedata.category(char)[0] not in "LM":
        return _REFUSED
    name = unicodedata.name(char, "")
    if not name or name.startswith("COMBINING"):
        return _REFUSED
    return name.split(" ", 1)[0]


def _one_script(part: str) -> bool:
    scripts = {_script(char) for char in part} - {None}
    if _REFUSED in scripts:
        return False
    return len(scripts) <= 1 or any(scripts <= allowed for allowed in _HAN_COMBINATIONS)


def problem(address: str) -> str | None:
    """What is wrong with an address as typed (surrounding spaces allowed), or None."""
    typed = address.strip()
    if not typed:
        return REQUIRED
    if len(typed) > MAX_EMAIL or not typed.isprintable():
        return MALFORMED
    canon = canonical(typed)
    if len(canon) > MAX_EMAIL or not canon.isprintable() or not _SHAPE.match(canon):
        return MALFORMED
    local, domain = canon.rsplit("@", 1)
    if not (_one_script(local) and _one_script(domain)):
        return MALFORMED
    return None
