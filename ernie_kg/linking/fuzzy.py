"""Fuzzy alias candidates for near-miss spellings ("Khafre" -> "khafra").

Aliases (punctuation-free keys) become idf-weighted character n-gram vectors, hashed to
a fixed width so faiss can search them densely; the top hits are then re-scored exactly
with a blend of character n-gram cosine and word cosine (idf-weighted, so "Dee" prefers
"river dee" over "dee dee bridgewater" because "river" is a common word).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter

import faiss
import numpy as np

from ernie_kg.linking.aliases import AliasTable
from ernie_kg.linking.normalize import loose_key

__all__ = ["FuzzyAliasIndex"]


def _ngrams(text: str, n: int) -> list[str]:
    padded = f" {text} "
    return [padded[i:i + n] for i in range(max(1, len(padded) - n + 1))]


class FuzzyAliasIndex:
    """faiss search over the alias keys of an :class:`AliasTable`."""

    def __init__(
        self,
        aliases: AliasTable,
        ngram: int = 3,
        dim: int = 1024,
        shortlist: int = 32,
        char_weight: float = 0.5,
    ) -> None:
        self.ngram = ngram
        self.dim = dim
        self.shortlist = shortlist
        self.char_weight = char_weight
        groups: dict[str, list[str]] = {}
        for key in aliases.keys():
            loose = loose_key(key)
            if loose:
                groups.setdefault(loose, []).append(key)
        self.loose = list(groups)
        self._rows = {k: i for i, k in enumerate(self.loose)}
        self.keys_of = [groups[k] for k in self.loose]  # loose -> normalised keys
        gram_df: Counter = Counter()
        word_df: Counter = Counter()
        for key in self.loose:
            gram_df.update(set(_ngrams(key, ngram)))
            word_df.update(set(key.split(" ")))
        count = max(1, len(self.loose))
        self._gram_idf = {g: math.log((1 + count) / (1 + c)) + 1 for g, c in gram_df.items()}
        self._word_idf = {w: math.log((1 + count) / (1 + c)) + 1 for w, c in word_df.items()}
        self._default_gram_idf = math.log(1 + count) + 1
        self._grams = [self._gram_vector(k) for k in self.loose]
        self._words = [self._word_vector(k) for k in self.loose]
        matrix = np.zeros((len(self.loose), dim), dtype=np.float32)
        for row, grams in enumerate(self._grams):
            self._hash_into(matrix[row], grams)
        self.index = faiss.IndexFlatIP(dim)
        if len(self.loose):
            self.index.add(matrix)

    # ------------------------------------------------------------------ vectors
    def _gram_vector(self, text: str) -> dict[str, float]:
        counts = Counter(_ngrams(text, self.ngram))
        vector = {g: c * self._gram_idf.get(g, self._default_gram_idf) for g, c in counts.items()}
        return _unit(vector)

    def _word_vector(self, text: str) -> dict[str, float]:
        counts = Counter(text.split(" "))
        return _unit({w: c * self._word_idf.get(w, self._default_gram_idf)
                      for w, c in counts.items()})

    def _hash_into(self, row: np.ndarray, grams: dict[str, float]) -> None:
        for gram, weight in grams.items():
            code = zlib.crc32(gram.encode("utf-8"))
            row[code % self.dim] += weight if code & 0x80000000 else -weight
        norm = float(np.linalg.norm(row))
        if norm:
            row /= norm

    def similarity(self, query: str, loose: str) -> float:
        """Exact blended similarity in [0, 1] between two punctuation-free keys."""
        return self._score(self._gram_vector(query), self._word_vector(query), loose)

    def _score(self, grams: dict[str, float], words: dict[str, float], loose: str) -> float:
        row = self._rows.get(loose)
        char = _dot(grams, self._grams[row] if row is not None else self._gram_vector(loose))
        word = _dot(words, self._words[row] if row is not None else self._word_vector(loose))
        return self.char_weight * char + (1 - self.char_weight) * word

    # ------------------------------------------------------------------ search
    def search(self, surface: str, k: int = 5, threshold: float = 0.0) -> list[tuple[str, float]]:
        """Up to ``k`` normalised alias keys close to ``surface``, with similarity."""
        return self.search_many([surface], k, threshold)[0]

    def search_many(
        self, surfaces: list[str], k: int = 5, threshold: float = 0.0
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` for several surfaces with one faiss call."""
        queries = [loose_key(s) for s in surfaces]
        results: list[list[tuple[str, float]]] = [[] for _ in surfaces]
        live = [i for i, q in enumerate(queries) if q]
        if not live or not self.loose:
            return results
        matrix = np.zeros((len(live), self.dim), dtype=np.float32)
        vectors = []
        for row, i in enumerate(live):
            grams = self._gram_vector(queries[i])
            vectors.append((grams, self._word_vector(queries[i])))
            self._hash_into(matrix[row], grams)
        _, hits = self.index.search(matrix, min(self.shortlist, len(self.loose)))
        for row, i in enumerate(live):
            grams, words = vectors[row]
            scored = []
            for hit in hits[row]:
                if hit < 0:
                    continue
                score = self._score(grams, words, self.loose[hit])
                if score >= threshold:
                    scored.extend((key, score) for key in self.keys_of[hit])
            scored.sort(key=lambda item: (-item[1], item[0]))
            results[i] = scored[:k]
        return results


def _unit(vector: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {g: v / norm for g, v in vector.items()} if norm else vector


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(g, 0.0) for g, v in a.items())
