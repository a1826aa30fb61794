"""Alias patterns: each alias as its sequence of token NORM hashes, found by hashing.

Why not spaCy's ``PhraseMatcher``: it holds a pattern ``Doc`` per alias (about 2 KB each,
18 GB for a Wikidata-sized KG) and is rebuilt in every process. Here an alias is the
NORM hashes of its tokens (spaCy's tokenizer, the NORM getter
:func:`~ernie_kg.linking.normalize.token_norm`), and every prefix of every alias goes
into one open-addressing hash table of 64-bit rolling hashes (``h = h * K + norm``):
two flat arrays, saved with the KG index and memory-mapped. Matching walks each start
token forward while the prefix is in the table, so a token that starts no alias costs
one probe; a string trie (``marisa-trie``'s ``prefixes``, measured 2.2 us per start
token on the synthetic 100k KG) was four times slower. Two token sequences could only
be confused by a 64-bit hash collision. Matches are the phrase matcher's: same NORM
comparison, longest first wins, no overlaps (``tests/test_patterns.py`` checks them
against spaCy's ``PhraseMatcher``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import spacy
from spacy.attrs import IS_PUNCT, IS_STOP, NORM
from spacy.language import Language
from spacy.tokens import Doc

from ernie_kg.kg.store import mapped
from ernie_kg.linking.compiled import speedups
from ernie_kg.linking.normalize import token_norm

__all__ = ["AliasPatterns", "PatternBuilder", "combine_patterns", "detection_nlp"]

_STOP_ONLY = 1  # flag: every token is a stop word or punctuation ("the", "his mother")
_SEED = 0x84222325CBF29CE4
_MULTIPLIER = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_PREFIX_ONLY = -1  # table value of a prefix that is no whole alias
_ATTRS = [NORM, IS_STOP, IS_PUNCT]
_ARRAYS = ("table_keys", "table_values", "pattern_keys", "pattern_flags", "pattern_chars")


def detection_nlp(lang: str = "en") -> Language:
    """A private ``spacy.blank(lang)`` whose NORM is :func:`token_norm` (case-folded,
    accents stripped): the tokenizer both patterns and texts go through."""
    nlp = spacy.blank(lang)
    vocab = nlp.vocab
    vocab.lex_attr_getters[NORM] = token_norm
    for lexeme in vocab:
        lexeme.norm_ = token_norm(lexeme.orth_)
    nlp.max_length = 10**8
    return nlp


def _prefix_hashes(norms: Iterable[int]) -> list[int]:
    """The rolling hash after each token (never 0: 0 marks an empty slot)."""
    hashes, h = [], _SEED
    for norm in norms:
        h = (h * _MULTIPLIER + norm) & _MASK or 1
        hashes.append(h)
    return hashes


def _table(hashes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open addressing (linear probing) at most half full, filled with numpy rounds."""
    capacity = 1 << max(4, int(2 * max(len(hashes), 1) - 1).bit_length())
    mask = capacity - 1
    keys = np.zeros(capacity, dtype=np.uint64)
    table_values = np.full(capacity, _PREFIX_ONLY, dtype=np.int32)
    slots = (hashes & np.uint64(mask)).astype(np.int64)
    pending = np.arange(len(hashes))
    while pending.size:
        free = keys[slots[pending]] == 0
        candidates = pending[free]
        # one item per free slot per round; the others probe on
        _, first = np.unique(slots[candidates], return_index=True)
        placed = candidates[first]
        keys[slots[placed]] = hashes[placed]
        table_values[slots[placed]] = values[placed]
        done = np.zeros(len(hashes), dtype=bool)
        done[placed] = True
        pending = pending[~done[pending]]
        moved = pending[keys[slots[pending]] != 0]
        slots[moved] = (slots[moved] + 1) & mask
    return keys, table_values


class PatternBuilder:
    """Collects patterns one surface at a time into flat arrays (no per-pattern Python
    object survives the call), so a 5M-entity KG's aliases fit in memory."""

    def __init__(self, nlp: Language) -> None:
        self.tokenizer = nlp.tokenizer
        self.prefix_hashes, self.prefix_patterns = array("Q"), array("q")
        self.full_hashes, self.key_ids = array("Q"), array("q")
        self.flags, self.chars = array("B"), array("H")

    def add(self, key_id: int, key_text: str, surface: str) -> None:
        """Tokenize ``surface`` (an alias of key ``key_id``) and add its prefixes."""
        doc = self.tokenizer(surface)
        if not len(doc):
            return
        pattern = len(self.full_hashes)
        norms, stops, puncts = doc.to_array(_ATTRS).T.tolist()
        hashes = _prefix_hashes(norms)
        self.prefix_hashes.extend(hashes)
        self.prefix_patterns.extend([_PREFIX_ONLY] * (len(hashes) - 1))
        self.prefix_patterns.append(pattern)
        self.full_hashes.append(hashes[-1])
        self.key_ids.append(key_id)
        self.flags.append(_STOP_ONLY if all(map(max, stops, puncts)) else 0)
        self.chars.append(min(len(key_text.replace(" ", "")), 65535))

    def arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`add` collected (picklable: a worker process's part)."""
        return {"prefix_hashes": np.frombuffer(self.prefix_hashes, dtype=np.uint64),
                "prefix_patterns": np.frombuffer(self.prefix_patterns, dtype=np.int64),
                "full_hashes": np.frombuffer(self.full_hashes, dtype=np.uint64),
                "key_ids": np.frombuffer(self.key_ids, dtype=np.int64),
                "flags": np.frombuffer(self.flags, dtype=np.uint8),
                "chars": np.frombuffer(self.chars, dtype=np.uint16)}

    def finish(self, key: Callable[[int], str], key_map: np.ndarray | None = None
               ) -> AliasPatterns:
        """The patterns (``key_map`` renumbers the key ids given to :meth:`add`). A token
        sequence added twice keeps its first key."""
        return combine_patterns([(self.arrays(), key_map)], key)


def combine_patterns(parts: list[tuple[dict[str, np.ndarray], np.ndarray | None]],
                     key: Callable[[int], str]) -> AliasPatterns:
    """The patterns of builders' :meth:`PatternBuilder.arrays`, in order, each with the
    map renumbering its key ids (None: kept). A token sequence keeps its first key."""
    patterns, offset = [], 0
    for arrays, _ in parts:
        prefix = arrays["prefix_patterns"]
        patterns.append(np.where(prefix >= 0, prefix + offset, prefix))
        offset += len(arrays["full_hashes"])
    full = np.concatenate([arrays["full_hashes"] for arrays, _ in parts])
    all_key_ids = np.concatenate([arrays["key_ids"] if key_map is None
                                  else key_map[arrays["key_ids"]] for arrays, key_map in parts])
    unique, first = np.unique(full, return_index=True)  # row = rank of the hash
    key_ids = all_key_ids[first]
    patterns = np.concatenate(patterns)
    whole = patterns >= 0
    values = np.full(len(patterns), _PREFIX_ONLY, dtype=np.int64)
    values[whole] = np.searchsorted(unique, full[patterns[whole]])
    hashes = np.concatenate([arrays["prefix_hashes"] for arrays, _ in parts])
    order = np.lexsort((-values, hashes))  # per hash, a whole alias first
    hashes, values = hashes[order], values[order]
    keep = np.ones(len(hashes), dtype=bool)
    keep[1:] = hashes[1:] != hashes[:-1]
    table_keys, table_values = _table(hashes[keep], values[keep].astype(np.int32))
    flags = np.concatenate([arrays["flags"] for arrays, _ in parts])
    chars = np.concatenate([arrays["chars"] for arrays, _ in parts])
    return AliasPatterns({
        "table_keys": table_keys, "table_values": table_values,
        "pattern_keys": key_ids.astype(np.int32),
        "pattern_flags": flags[first], "pattern_chars": chars[first]}, key)


class AliasPatterns:
    """Alias token sequences -> alias key ids; :meth:`spans` finds them in a doc."""

    def __init__(self, arrays: dict[str, np.ndarray], key: Callable[[int], str]) -> None:
        self.arrays = arrays
        self.key_ids = arrays["pattern_keys"]
        self.flags, self.chars = arrays["pattern_flags"], arrays["pattern_chars"]
        self.key = key  # key id -> the normalised alias key
        self._table_keys = np.ascontiguousarray(arrays["table_keys"], dtype=np.uint64)
        self._table_values = np.ascontiguousarray(arrays["table_values"], dtype=np.int32)
        # memoryviews: indexing one from Python costs a tenth of indexing numpy
        self._keys, self._values = memoryview(self._table_keys), memoryview(self._table_values)
        self._mask = len(arrays["table_keys"]) - 1
        self._usable: dict[tuple[bool, int], bytes] = {}
        self._row_keys: dict[int, str] = {}  # pattern row -> its key (bounded, see spans)

    @classmethod
    def build(cls, nlp: Language, surfaces: Iterable[tuple[int, str, str]],
              key: Callable[[int], str]) -> AliasPatterns:
        """From ``(key id, key, surface)`` triples; the first key of a token sequence
        keeps it."""
        builder = PatternBuilder(nlp)
        for key_id, key_text, surface in surfaces:
            builder.add(key_id, key_text, surface)
        return builder.finish(key)

    def save(self, directory: Path) -> None:
        """Write the table and pattern arrays into ``directory``."""
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", self.arrays[name], allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, key: Callable[[int], str]) -> AliasPatterns:
        """Memory-map what :meth:`save` wrote."""
        return cls({name: mapped(directory / f"{name}.npy") for name in _ARRAYS}, key)

    def __len__(self) -> int:
        return len(self.key_ids)

    # ------------------------------------------------------------------ matching
    def usable(self, skip_stop_words: bool, min_chars: int) -> bytes:
        """Per pattern row, 1 when the settings let it match (cached per setting)."""
        found = self._usable.get((skip_stop_words, min_chars))  # (True, 2) == (1, 2)
        if found is None:
            setting = (bool(skip_stop_words), int(min_chars))
            ok = np.asarray(self.chars) >= setting[1]
            if setting[0]:
                ok &= (np.asarray(self.flags) & _STOP_ONLY) == 0
            found = self._usable[setting] = ok.astype(np.uint8).tobytes()
        return found

    def alias_matches_python(self, doc: Doc, usable: bytes) -> list[tuple[int, int, int]]:
        """``(-tokens, start, pattern row)`` of every usable alias occurrence: each start
        token walked forward while its prefix hash is in the table. (The compiled
        ``_speedups.alias_spans`` does this and the choice below from the doc's C
        structs.)"""
        words = doc.to_array(NORM).tolist()
        length = len(words)
        keys, values, mask = self._keys, self._values, self._mask
        matches = []
        for start in range(length):
            h = _SEED
            for end in range(start, length):
                h = (h * _MULTIPLIER + words[end]) & _MASK or 1
                slot = h & mask
                stored = keys[slot]
                while stored != h and stored:
                    slot = (slot + 1) & mask
                    stored = keys[slot]
                if not stored:
                    break  # no alias starts with these tokens
                row = values[slot]
                if row >= 0 and usable[row]:
                    matches.append((start - end - 1, start, row))
        return matches

    def alias_spans_python(self, doc: Doc, usable: bytes) -> list[tuple[int, int, int, int,
                                                                         int]]:
        """``(start_char, end_char, pattern row, token_start, token_end)`` of the usable
        alias occurrences, longest first wins, no overlaps, sorted by start. (The compiled
        ``_speedups.alias_spans`` does the same from the doc's C structs.)"""
        matches = self.alias_matches_python(doc, usable)
        matches.sort()
        taken = bytearray(len(doc))
        found = []
        for negative, start, row in matches:
            end = start - negative
            if 1 in taken[start:end]:
                continue
            taken[start:end] = b"\x01" * (end - start)
            last = doc[end - 1]
            found.append((doc[start].idx, last.idx + len(last), row, start, end))
        found.sort()
        return found

    def spans(self, doc: Doc, skip_stop_words: bool = True, min_chars: int = 2
              ) -> list[tuple[int, int, str, int, int, str]]:
        """``(start_char, end_char, key, token_start, token_end, "alias")`` of the
        aliases in ``doc``: longest first wins, no overlaps, sorted by start."""
        if not len(doc):
            return []
        usable = self.usable(skip_stop_words, min_chars)
        if speedups is not None:
            found = speedups.alias_spans(doc, self._table_keys, self._table_values, usable)
        else:
            found = self.alias_spans_python(doc, usable)
        row_keys = self._row_keys
        if len(row_keys) > 500_000:  # bounded on a Wikidata-sized table: start over
            row_keys.clear()
        spans = []
        for start_char, end_char, row, start, end in found:
            key = row_keys.get(row)
            if key is None:  # a key is looked up once per row, not once per occurrence
                key = row_keys[row] = self.key(int(self.key_ids[row]))
            spans.append((start_char, end_char, key, start, end, "alias"))
        return spans
