"""Text (+ spans, ids) -> model inputs: the processor (LUKE-tokenizer analogue), entity
resolution, markers and truncation, first-wordpiece alignment."""

from ernie_kg.processing.alignment import (
    EntitySpan,
    align_batch,
    align_entities,
    align_offsets,
    resolve_overlaps,
    row_lookup,
)
from ernie_kg.processing.markers import DEFAULT_MARKERS
from ernie_kg.processing.processor import PROCESSOR_FILE, TASKS, ErnieKGProcessor

__all__ = [
    "DEFAULT_MARKERS",
    "PROCESSOR_FILE",
    "TASKS",
    "EntitySpan",
    "ErnieKGProcessor",
    "align_batch",
    "align_entities",
    "align_offsets",
    "resolve_overlaps",
    "row_lookup",
]
