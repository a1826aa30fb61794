"""Text normalisation shared by alias building and lookup.

The same functions run when the alias table is built and when text is looked up, so a
surface form matches however it is cased, accented, quoted or spaced around punctuation
("Rolls-Royce", "rolls - royce" and "ROLLS–ROYCE" share one key).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "acronym_query",
    "acronyms",
    "cased_key",
    "loose_key",
    "normalize",
    "stem_key",
    "surface_keys",
    "token_norm",
]

# Typographic variants NFKC leaves alone but writers use interchangeably.
_PUNCT_MAP = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)
#: Invisible format characters (Unicode category Cf: soft hyphen, zero-width space and
#: joiners, bidi marks, a byte-order mark inside text, ...): keys ignore them, so
#: "Par\u200bis" and "Paris\u00ad" are "paris" when the table is built and when text is
#: looked up. The text itself keeps them (offsets hold).
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]")
_PIECES = re.compile(r"\w+|[^\w\s]")
_CACHE_SIZE = 1 << 17


def _fold(text: str) -> str:
    """NFKC, typographic punctuation to ASCII, invisible format characters dropped,
    accents stripped (case kept)."""
    text = unicodedata.normalize("NFKC", text).translate(_PUNCT_MAP)
    if text.isascii():
        return text
    text = _INVISIBLE.sub("", text)
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped)


@lru_cache(maxsize=_CACHE_SIZE)
def cased_key(text: str) -> str:
    """Like :func:`normalize` but keeping case: the key of the case-sensitive prior."""
    return " ".join(_PIECES.findall(_fold(text)))


@lru_cache(maxsize=_CACHE_SIZE)
def normalize(text: str) -> str:
    """The alias key: folded, case-folded, words and punctuation marks space-separated."""
    return " ".join(_PIECES.findall(_fold(text).casefold()))


@lru_cache(maxsize=_CACHE_SIZE)
def loose_key(text: str) -> str:
    """:func:`normalize` without punctuation: the back-off key ("lieutenant-colonel")."""
    return " ".join(p for p in normalize(text).split(" ") if p[:1].isalnum() or "_" in p)


# Endings of English inflection and derivation, longest first; a root keeps 4+ chars.
_SUFFIXES = tuple(sorted(
    "ational ations ation ings ing ers er ists ist isms ism ians ian ical ics ic ies es "
    "s y e a o al ly".split(), key=len, reverse=True))


@lru_cache(maxsize=_CACHE_SIZE)
def _root(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


_ACRONYM_SKIP = frozenset("of and for the in on at to de des du la le et a an".split())


class SurfaceKeys(NamedTuple):
    """Every key an alias is filed under (see :func:`surface_keys`)."""

    key: str
    cased: str
    loose: str
    stem: str
    acronyms: tuple[str, ...]


def surface_keys(surface: str) -> SurfaceKeys | None:
    """:func:`normalize`, :func:`cased_key`, :func:`loose_key`, :func:`stem_key` and
    :func:`acronyms` of ``surface`` in one pass (building an alias table calls it once
    per name). None when the normalised key is empty; stem and acronyms are empty when
    the loose key is. The stem and acronym rules live here only."""
    folded = _fold(surface)
    pieces = _PIECES.findall(folded.casefold())
    if not pieces:
        return None
    key = " ".join(pieces)
    cased = " ".join(_PIECES.findall(folded))
    loose_parts = [p for p in pieces if p[:1].isalnum() or "_" in p]
    if not loose_parts:
        return SurfaceKeys(key, cased, "", "", ())
    found = []
    apart = [w for w in loose_parts if w not in _ACRONYM_SKIP]
    together = [w for w in key.replace(" - ", "-").split(" ")
                if w[:1].isalnum() and w not in _ACRONYM_SKIP]
    for words in (apart, together):
        if len(words) >= 2:
            acronym = "".join(w[0] for w in words)
            if acronym not in found:
                found.append(acronym)
    return SurfaceKeys(key, cased, " ".join(loose_parts),
                       " ".join([_root(p) for p in loose_parts]), tuple(found))


@lru_cache(maxsize=_CACHE_SIZE)
def stem_key(text: str) -> str:
    """:func:`loose_key` with each word cut to a root by a light suffix stripper: the
    last back-off key, for inflections and spelling variants ("fencing" / "fencer",
    "linguistics" / "linguistic", "Khafra" / "Khafre")."""
    found = surface_keys(text)
    return found.stem if found is not None else ""


def acronyms(text: str) -> set[str]:
    """Lower-case acronyms of a name of two or more words, hyphenated parts counted
    apart and together ("Asia-Pacific Economic Cooperation": "apec", "aec";
    "Organization for Security and Co-operation in Europe": "oscoe", "osce")."""
    found = surface_keys(text)
    return set(found.acronyms) if found is not None else set()


def acronym_query(surface: str) -> str | None:
    """``surface`` as an acronym to look up ("WTO" -> "wto"), or None if it is none:
    one token of 2-8 letters and digits, its letters (at least two) all capitals."""
    token = surface.strip()
    if not 2 <= len(token) <= 8 or not token.isalnum():
        return None
    letters = [c for c in token if c.isalpha()]
    if len(letters) < 2 or not all(c.isupper() for c in letters):
        return None
    return token.casefold()


def token_norm(token: str) -> str:
    """The per-token norm alias patterns compare (set as spaCy's NORM getter)."""
    return _fold(token).casefold()
