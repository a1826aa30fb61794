# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""Compiled hot path of the linker: what pure Python can only reach through spaCy's
Python objects (a ``Token`` per offset) is read here straight from the doc's C structs.
Same results as the Python code it stands in for (``context.context_words_python``,
``patterns.alias_spans_python``); the tests check both on the same inputs. Built
against one spaCy version (``BUILT_WITH_SPACY``) and used only with that version: see
:mod:`ernie_kg.linking.compiled`.
"""

from libc.stdint cimport int32_t, uint64_t
from libcpp.algorithm cimport sort
from libcpp.pair cimport pair
from libcpp.vector cimport vector
from spacy.attrs cimport NORM
from spacy.tokens.doc cimport Doc
from spacy.tokens.token cimport Token
from spacy.typedefs cimport attr_t

cdef extern from *:
    """
    #ifndef ERNIE_KG_SPACY_VERSION
    #define ERNIE_KG_SPACY_VERSION "unknown"
    #endif
    """
    const char* ERNIE_KG_SPACY_VERSION

BUILT_WITH_SPACY = ERNIE_KG_SPACY_VERSION.decode()


def context_words(Doc doc not None, skip):
    """The set of NORM hashes of the tokens outside the token spans ``skip`` (clipped to
    the doc; 0, no NORM, left out), added in token order."""
    cdef vector[char] skipped
    cdef int i, start, end
    cdef attr_t norm
    skipped.resize(doc.length, 0)
    for start, end in skip:
        for i in range(max(start, 0), min(end, doc.length)):
            skipped[i] = 1
    words = set()
    for i in range(doc.length):
        if not skipped[i]:
            norm = Token.get_struct_attr(&doc.c[i], NORM)
            if norm:
                words.add(norm)
    return words


cdef uint64_t _SEED = 0x84222325CBF29CE4ULL
cdef uint64_t _MULTIPLIER = 0x9E3779B97F4A7C15ULL


def alias_spans(Doc doc not None, const uint64_t[::1] keys, const int32_t[::1] values,
                const unsigned char[::1] usable):
    """``(start_char, end_char, pattern row, token_start, token_end)`` of the usable alias
    occurrences in ``doc``, longest first wins, no overlaps, sorted by start: each start
    token walked forward while the rolling hash of its NORMs is in the open-addressing
    table ``keys`` / ``values`` (see ``patterns.py``), then the greedy choice, all on C
    structs (no Token objects)."""
    cdef Py_ssize_t n = doc.length, mask = keys.shape[0] - 1, start, end, slot, i
    cdef uint64_t h, stored
    cdef int32_t row
    # ((-tokens, start), row): sorted, the longest match first, then the leftmost
    cdef vector[pair[pair[int, int], int32_t]] matches
    cdef vector[char] taken
    cdef vector[pair[int, pair[int, int32_t]]] chosen  # (start, (end, row))
    for start in range(n):
        h = _SEED
        for end in range(start, n):
            h = h * _MULTIPLIER + <uint64_t>Token.get_struct_attr(&doc.c[end], NORM)
            if h == 0:
                h = 1
            slot = <Py_ssize_t>(h & <uint64_t>mask)
            stored = keys[slot]
            while stored != h and stored != 0:
                slot = (slot + 1) & mask
                stored = keys[slot]
            if stored == 0:
                break
            row = values[slot]
            if row >= 0 and usable[row]:
                matches.push_back(pair[pair[int, int], int32_t](
                    pair[int, int](<int>(start - end - 1), <int>start), row))
    if matches.empty():
        return []
    sort(matches.begin(), matches.end())
    taken.resize(n, 0)
    for i in range(<Py_ssize_t>matches.size()):
        start = matches[i].first.second
        end = start - matches[i].first.first
        for slot in range(start, end):
            if taken[slot]:
                break
        else:
            for slot in range(start, end):
                taken[slot] = 1
            chosen.push_back(pair[int, pair[int, int32_t]](
                <int>start, pair[int, int32_t](<int>end, matches[i].second)))
    sort(chosen.begin(), chosen.end())
    spans = []
    for i in range(<Py_ssize_t>chosen.size()):
        start, end, row = chosen[i].first, chosen[i].second.first, chosen[i].second.second
        spans.append((doc.c[start].idx, doc.c[end - 1].idx + doc.c[end - 1].lex.length,
                      row, start, end))
    return spans
