# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""Compiled hot path of the linker: what pure Python can only reach through spaCy's
Python objects (a ``Token`` per offset, a numpy array per doc) is read here straight from
the doc's C structs. Same results as the Python code it stands in for
(``mentions.alias_spans_python``, ``context.context_words_python``); the tests check
both on the same inputs. Built against one spaCy version (``BUILT_WITH_SPACY``) and
used only with that version: see :mod:`ernie_kg.linking.compiled`.
"""

from libcpp.vector cimport vector
from spacy.attrs cimport NORM
from spacy.matcher.phrasematcher cimport PhraseMatcher
from spacy.structs cimport SpanC, TokenC
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


cdef inline bint _before(const SpanC* a, const SpanC* b) noexcept:
    """Longest first, then leftmost (the order in which matches claim tokens)."""
    cdef int length_a = a.end - a.start
    cdef int length_b = b.end - b.start
    return length_a > length_b or (length_a == length_b and a.start < b.start)


def alias_spans(PhraseMatcher matcher not None, Doc doc not None, dict key_of not None):
    """``(start_char, end_char, key, token_start, token_end, "alias")`` of the phrase
    matches of ``doc``: longest first wins, no overlaps, sorted by start."""
    cdef vector[SpanC] matches
    cdef vector[SpanC] kept
    cdef SpanC held
    cdef const TokenC* last
    cdef int n, i, j, k
    cdef bint free
    if doc.length == 0:
        return []
    matcher.find_matches(doc, 0, doc.length, &matches)
    n = <int>matches.size()
    for i in range(1, n):  # stable insertion sort: a sentence has a handful of matches
        held = matches[i]
        j = i - 1
        while j >= 0 and _before(&held, &matches[j]):
            matches[j + 1] = matches[j]
            j -= 1
        matches[j + 1] = held
    for i in range(n):
        free = True
        for k in range(<int>kept.size()):
            if matches[i].start < kept[k].end and kept[k].start < matches[i].end:
                free = False
                break
        if free:
            kept.push_back(matches[i])
    n = <int>kept.size()
    for i in range(1, n):  # by start
        held = kept[i]
        j = i - 1
        while j >= 0 and kept[j].start > held.start:
            kept[j + 1] = kept[j]
            j -= 1
        kept[j + 1] = held
    found = []
    for i in range(n):
        last = &doc.c[kept[i].end - 1]
        found.append((doc.c[kept[i].start].idx, last.idx + last.lex.length,
                      key_of[kept[i].label], kept[i].start, kept[i].end, "alias"))
    return found


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
