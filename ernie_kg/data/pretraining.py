"""Pre-training instances: corpus -> sentences -> linked entities -> sentence pairs -> shards.

Why this shape:

* Sentences come from spaCy's rule-based ``sentencizer`` on a blank pipeline, so nothing
  is downloaded. The same spaCy tokens are the *words* of whole-word masking: English
  words for English text, and jieba-segmented words for Chinese (spaCy's ``zh`` tokenizer
  with ``segmenter="jieba"``), as Chinese-BERT-wwm does.
* Each instance is a sentence pair for next-sentence prediction (50% the true next
  sentence, 50% a random sentence of another document, BERT's recipe) with each linked
  entity on the first wordpiece of its mention (:mod:`ernie_kg.processing.alignment`).
* Entities are stored as indices into the data set's own entity vocabulary
  (``manifest.json``), not as model rows, so one prepared corpus serves any entity table.
* Instances are written in safetensors shards of fixed width, read back lazily through
  memory-mapped slices: a corpus larger than RAM streams.

Without a KG (``mlm_only``: domain post-training), the instances are single segments
of each line of text instead (:mod:`ernie_kg.data.text_segments`), in the same shards.

Layout of a prepared directory: ``manifest.json`` + ``shard-00000.safetensors`` ...,
each shard holding ``input_ids``, ``token_type_ids``, ``entity_ids`` (vocab index + 1,
0 = none), ``word_ids`` and ``mention_ids`` (-1 = none), ``lengths`` and
``next_sentence_label`` (0 = B follows A, 1 = random B, as in Hugging Face BERT).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from ernie_kg.data.text_segments import segment_instances, word_containing
from ernie_kg.errors import DataFormatError
from ernie_kg.io import iter_jsonl, iter_text_lines, read_json, write_atomic, write_json
from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.processing.alignment import align_entities

MANIFEST = "manifest.json"
FIELDS = ("input_ids", "token_type_ids", "entity_ids", "word_ids", "mention_ids")
FORMAT_VERSION = 1


# ---------------------------------------------------------------------- corpus
def read_documents(path: str | Path) -> Iterator[str]:
    """Documents of a corpus file: JSONL lines ``{"text": ...}`` (``.jsonl``/``.json``) or
    plain text with one document per blank-line-separated block."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "corpus file not found")
    if path.suffix in (".jsonl", ".json"):
        for number, record in iter_jsonl(path, DataFormatError):
            text = record.get("text")
            if not isinstance(text, str):
                raise DataFormatError(path, number, 'expected an object with a "text" string')
            if text.strip():
                yield text
        return
    block: list[str] = []
    for _, line in iter_text_lines(path, DataFormatError):
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def sentence_splitter(lang: str = "en"):
    """A blank spaCy pipeline with the rule-based sentencizer (jieba words for ``zh``)."""
    import spacy

    if lang == "zh":
        try:
            nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
        except Exception as error:  # jieba missing: spaCy raises its own ImportError/ValueError
            raise ImportError(
                "Chinese whole-word masking needs jieba: pip install 'ernie-kg[zh]'"
            ) from error
    else:
        nlp = spacy.blank(lang)
    nlp.add_pipe("sentencizer")
    nlp.max_length = 10**8
    return nlp


@dataclass(frozen=True)
class Sentence:
    """A sentence, its words as char spans, and its linked mentions ``(start, end, id)``."""

    text: str
    words: tuple[tuple[int, int], ...]
    mentions: tuple[tuple[int, int, str], ...]


def split_documents(
    documents: Iterable[str], linker: Any, lang: str = "en", batch_size: int = 64
) -> Iterator[list[Sentence]]:
    """Per document, its sentences with words and linked (non-NIL) mentions."""
    for texts, words in _split(documents, lang, batch_size):
        linked = linker.pipe(texts) if linker is not None else ([] for _ in texts)
        yield [_sentence(text, spans, ((m.start, m.end, m.entity_id) for m in mentions))
               for text, spans, mentions in zip(texts, words, linked)]


def _sentence(text: str, words: tuple, mentions: Iterable[tuple]) -> Sentence:
    """A sentence with its linked ``(start, end, entity_id)``, NIL mentions dropped."""
    return Sentence(text, words, tuple(m for m in mentions if m[2] is not None))


def _split(documents: Iterable[str], lang: str, batch_size: int = 64,
           ) -> Iterator[tuple[list[str], list[tuple]]]:
    """Per document with any, its sentences and their words (char spans)."""
    nlp = sentence_splitter(lang)
    for doc in nlp.pipe(documents, batch_size=batch_size):
        texts, words = [], []
        for sent in doc.sents:
            text = sent.text.strip()
            if not text:
                continue
            offset = sent.start_char + sent.text.index(text[0])
            texts.append(text)
            words.append(tuple(
                (t.idx - offset, t.idx - offset + len(t.text)) for t in sent
                if not t.is_space and t.idx >= offset
            ))
        if texts:
            yield texts, words


def _linked_on_cluster(paths: Sequence[str | Path], linker: Any, lang: str, out: Path,
                       progress: bool) -> list[list[Sentence]]:
    """The corpus's sentences linked by a :class:`~ernie_kg.linking.cluster.ClusterLinker`:
    written to ``OUT/.linking/sentences.jsonl``, linked into ``linked.jsonl`` (in shards,
    resumable) and read back in order. The sentence file is replaced only when its
    content changed, so a rerun resumes the linking."""
    import filecmp
    import os

    from tqdm.auto import tqdm

    split = [part for path in paths for part in _split(
        tqdm(read_documents(path), desc=f"splitting {Path(path).name}", unit="doc",
             disable=not progress), lang)]
    work = out / ".linking"
    sentences, linked = work / "sentences.jsonl", work / "linked.jsonl"
    fresh = work / "sentences.jsonl.new"
    write_atomic(fresh, lambda sink: sink.writelines(
        json.dumps({"text": text}, ensure_ascii=False) + "\n"
        for texts, _ in split for text in texts))
    if sentences.is_file() and filecmp.cmp(fresh, sentences, shallow=False):
        fresh.unlink()
    else:
        os.replace(fresh, sentences)
    linker.link_file(sentences, linked, progress=progress)
    documents = []
    with open(linked, encoding="utf-8") as lines:
        for texts, words in split:
            records = [json.loads(next(lines)) for _ in texts]
            documents.append([_sentence(text, spans, (
                (m["start"], m["end"], m["entity_id"]) for m in record["mentions"]))
                for text, spans, record in zip(texts, words, records)])
    return documents


# ---------------------------------------------------------------------- instances
def sentence_pairs(
    documents: Sequence[Sequence[Sentence]], seed: int = 0, random_next: float = 0.5
) -> Iterator[tuple[Sentence, Sentence, int]]:
    """``(A, B, label)`` for every sentence A that has a successor: label 0 when B is A's
    true next sentence, 1 (with ``random_next``) when B comes from another document.
    A one-sentence document pairs with a random sentence (label 1), so corpora of
    isolated sentences still give instances (train those with NSP off)."""
    rng = random.Random(seed)
    others = [(d, s) for d, doc in enumerate(documents) for s in range(len(doc))]
    single = len(documents) < 2  # then a "random" partner is any non-next sentence
    for d, doc in enumerate(documents):
        for s, first in enumerate(doc):
            if s + 1 < len(doc) and rng.random() >= random_next:
                yield first, doc[s + 1], 0
                continue
            if s + 1 == len(doc) and len(doc) > 1:
                continue  # a last sentence has no true next: skipping it keeps 50/50
            for _ in range(20):
                od, os_ = others[rng.randrange(len(others))]
                if od != d or (single and os_ not in (s, s + 1)):
                    yield first, documents[od][os_], 1
                    break


def encode_pair(
    tokenizer: Any, first: Sentence, second: Sentence, max_length: int, vocab: EntityVocab
) -> dict[str, list[int]]:
    """Token ids, segment ids, first-wordpiece entities, word ids and mention ids of a pair."""
    encoding = tokenizer(first.text, second.text, truncation="longest_first",
                         max_length=max_length, return_offsets_mapping=False)
    length = len(encoding["input_ids"])
    entity_ids = [0] * length
    word_ids = [-1] * length
    mention_ids = [-1] * length
    item = encoding.encodings[0]
    word_base = 0
    mention_base = 0
    for index, sentence in enumerate((first, second)):
        rows = align_entities(encoding, sentence.text, sentence.mentions, vocab.add,
                              sequence_index=index)
        for position, row in enumerate(rows):
            if row:
                entity_ids[position] = row
        starts = [start for start, _ in sentence.words]
        mention_spans = [(s, e) for s, e, _ in sentence.mentions]
        for position, ((a, b), sid) in enumerate(zip(item.offsets, item.sequence_ids)):
            if sid != index or b <= a:
                continue
            word = word_containing(sentence.words, starts, a)
            if word is not None:
                word_ids[position] = word_base + word
            for m, (s, e) in enumerate(mention_spans):
                if s <= a < e:
                    mention_ids[position] = mention_base + m
                    break
        word_base += len(sentence.words)
        mention_base += len(mention_spans)
    return {
        "input_ids": list(encoding["input_ids"]),
        "token_type_ids": list(encoding["token_type_ids"]),
        "entity_ids": entity_ids,
        "word_ids": word_ids,
        "mention_ids": mention_ids,
    }


# ---------------------------------------------------------------------- shards
def prepare_pretraining_data(
    corpus: str | Path | Sequence[str | Path],
    linker: Any,
    tokenizer: Any,
    out: str | Path,
    max_length: int = 128,
    seed: int = 0,
    shard_size: int = 4096,
    lang: str = "en",
    progress: bool = True,
    mlm_only: bool = False,
) -> dict[str, Any]:
    """Turn corpus file(s) into instance shards in ``out``; returns the manifest.

    Deterministic for a seed. The manifest is written last (atomically), so a directory
    with a manifest is complete. ``linker`` is an entity linker, or a
    :class:`~ernie_kg.linking.cluster.ClusterLinker` that links the sentences on a Dask
    cluster (the same instances; an interrupted linking resumes on the next call).
    ``mlm_only`` (domain post-training; no linker): single segments of each line of text
    (:mod:`ernie_kg.data.text_segments`) instead of linked sentence pairs. A corpus file
    without text is an error naming it, before anything is written.
    """
    from tqdm.auto import tqdm

    paths = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    if not paths:
        raise ValueError("no corpus files given")
    for path in paths:  # a missing file raises in read_documents
        if next(iter(read_documents(path)), None) is None:
            raise DataFormatError(path, None, "no text in this corpus file (it is empty or "
                                  "holds only blank lines)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the old manifest would vouch for new shards
    for stale in out.glob("shard-*.safetensors"):
        stale.unlink()
    vocab = EntityVocab()  # the data set's own vocabulary, grown as ids are seen
    counts: dict[str, int] = {"documents": 0}
    if mlm_only:
        def lines() -> Iterator[str]:
            for path in paths:
                for document in read_documents(path):
                    for line in filter(str.strip, document.split("\n")):
                        counts["documents"] += 1  # a text: one line
                        yield line.strip()

        instances: Iterator[tuple[dict[str, list[int]], int]] = (
            (fields, 0) for fields in segment_instances(lines(), tokenizer, max_length,
                                                        sentence_splitter(lang)))
    else:
        documents = _documents(paths, linker, lang, out, progress)
        counts.update(documents=len(documents), sentences=sum(len(d) for d in documents))
        instances = ((encode_pair(tokenizer, first, second, max_length, vocab), label)
                     for first, second, label in sentence_pairs(documents, seed))
    shards: list[dict[str, Any]] = []
    buffer: list[tuple[dict[str, list[int]], int]] = []
    for instance in tqdm(instances, desc="instances", unit="segment" if mlm_only else "pair",
                         disable=not progress):
        buffer.append(instance)
        if len(buffer) >= shard_size:
            shards.append(_write_shard(out, len(shards), buffer, max_length, tokenizer))
            buffer = []
    if buffer:
        shards.append(_write_shard(out, len(shards), buffer, max_length, tokenizer))
    if not shards:
        raise DataFormatError(paths[0], None, "no sentence pairs: the corpus needs more "
                              "than one sentence")
    aligned = sum(s["aligned_entities"] for s in shards)
    manifest = {
        "format_version": FORMAT_VERSION,
        "instances": "segments" if mlm_only else "pairs",
        "num_instances": sum(s["num_instances"] for s in shards),
        "max_length": max_length,
        "seed": seed,
        "lang": lang,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "vocab_size": len(tokenizer),
        **counts,
        "aligned_entities": aligned,
        "entity_vocab": vocab.ids,
        "shards": shards,
    }
    write_json(out / MANIFEST, manifest, indent=None)
    shutil.rmtree(out / ".linking", ignore_errors=True)  # the cluster's sentence files
    return manifest


def _documents(paths: Sequence[str | Path], linker: Any, lang: str, out: Path,
               progress: bool) -> list[list[Sentence]]:
    """The corpus's documents as linked sentences (on a Dask cluster when ``linker`` is a
    :class:`~ernie_kg.linking.cluster.ClusterLinker`)."""
    from tqdm.auto import tqdm

    from ernie_kg.linking.cluster import ClusterLinker

    if isinstance(linker, ClusterLinker):
        documents = _linked_on_cluster(paths, linker, lang, out, progress)
    else:
        documents = []
        for path in paths:
            texts = read_documents(path)
            found = split_documents(tqdm(texts, desc=f"linking {Path(path).name}",
                                         unit="doc", disable=not progress), linker, lang)
            documents.extend(doc for doc in found if doc)
    if not documents:
        raise DataFormatError(paths[0], None, "no sentences found in the corpus")
    return documents


def _write_shard(
    out: Path, number: int, buffer: list[tuple[dict[str, list[int]], int]], width: int,
    tokenizer: Any,
) -> dict[str, Any]:
    count = len(buffer)
    pad = tokenizer.pad_token_id or 0
    arrays = {
        "input_ids": np.full((count, width), pad, dtype=np.int32),
        "token_type_ids": np.zeros((count, width), dtype=np.int8),
        "entity_ids": np.zeros((count, width), dtype=np.int32),
        "word_ids": np.full((count, width), -1, dtype=np.int32),
        "mention_ids": np.full((count, width), -1, dtype=np.int32),
    }
    lengths = np.zeros(count, dtype=np.int32)
    labels = np.zeros(count, dtype=np.int8)
    for i, (fields, label) in enumerate(buffer):
        length = len(fields["input_ids"])
        lengths[i] = length
        labels[i] = label
        for name in FIELDS:
            arrays[name][i, :length] = fields[name]
    name = f"shard-{number:05d}.safetensors"
    data = save({**arrays, "lengths": lengths, "next_sentence_label": labels})
    write_atomic(out / name, lambda handle: handle.write(data), binary=True)
    return {"file": name, "num_instances": count,
            "aligned_entities": int((arrays["entity_ids"] > 0).sum())}


class PretrainingShards:
    """Random access to prepared instances without loading the shards into RAM."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        self.manifest = read_json(
            manifest_path, DataFormatError,
            "not a prepared directory (run `ernie-kg pretrain prepare`)")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise DataFormatError(manifest_path, None,
                                  f"format_version {self.manifest.get('format_version')!r} "
                                  f"is not {FORMAT_VERSION}")
        self.entity_vocab: list[str] = self.manifest["entity_vocab"]
        counts = [s["num_instances"] for s in self.manifest["shards"]]
        self._ends = np.cumsum(counts)
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _shard(self, number: int) -> Any:
        handle = self._handles.get(number)
        if handle is None:
            path = self.directory / self.manifest["shards"][number]["file"]
            handle = self._handles[number] = safe_open(str(path), framework="numpy")
        return handle

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"instance {index} out of range ({len(self)} instances)")
        number = int(np.searchsorted(self._ends, index, side="right"))
        local = index - (int(self._ends[number - 1]) if number else 0)
        shard = self._shard(number)
        length = int(shard.get_slice("lengths")[local:local + 1][0])
        item = {name: np.asarray(shard.get_slice(name)[local:local + 1])[0, :length]
                for name in FIELDS}
        label = shard.get_slice("next_sentence_label")[local:local + 1]
        item["next_sentence_label"] = int(label[0])
        item["index"] = index
        return item
