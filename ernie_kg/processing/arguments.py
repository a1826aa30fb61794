"""The processor's call arguments, taken as Hugging Face tokenizers take them: one text
or a batch of texts (lists of words with ``is_split_into_words``), a second text per
text for sentence pairs, and each keyword either for the one text or a list with one
entry per text.

Why apart from the processor: these checks decide nothing about features; kept here,
every malformed call gets one clear error before any linking or tokenizing starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["is_single", "pair_texts", "unbatch"]


def is_single(text: Any, split: bool) -> bool:
    """True for one text (a str, or one list of words when ``split``), False for a batch."""
    if isinstance(text, str):
        if split:
            raise TypeError("is_split_into_words=True expects a list of words, not a str")
        return True
    if not isinstance(text, Sequence):
        raise TypeError(f"expected a str or a list of str, got {type(text).__name__}")
    if split:
        return not text or isinstance(text[0], str)
    return False


def unbatch(args: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Per text, its value of every batched keyword (None stays None for all)."""
    for name, value in args.items():
        if value is not None and (not isinstance(value, Sequence) or len(value) != size):
            raise ValueError(f"batched call: {name} must be a list with one entry per text "
                             f"({size}), got {value!r}")
    return [{name: None if value is None else value[n] for name, value in args.items()}
            for n in range(size)]


def pair_texts(text_pair: Any, single: bool, size: int, task: str | None) -> list[Any]:
    """The second segment of each text, checked: present, one per text, no task."""
    if text_pair is None:
        raise ValueError("entity_spans_pair/entity_ids_pair given without text_pair")
    if task is not None:
        raise ValueError(f"text_pair: sentence pairs take no task spans (task={task!r}); "
                         "use a processor with task=None")
    if single:
        return [text_pair]
    if isinstance(text_pair, str):
        raise ValueError(f"batched call: text_pair must be a list with one entry per text "
                         f"({size}), got a str")
    return [kw["text_pair"] for kw in unbatch({"text_pair": text_pair}, size)]
