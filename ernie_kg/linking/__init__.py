"""Entity linking: alias table, spaCy mention detection, disambiguation, spaCy
component, first-wordpiece alignment and the text-to-model-inputs processor."""

from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.alignment import (
    EntitySpan,
    align_batch,
    align_entities,
    align_offsets,
    resolve_overlaps,
    row_lookup,
)
from ernie_kg.linking.component import COMPONENT_NAME, EntityLinkerComponent
from ernie_kg.linking.context import ContextModel
from ernie_kg.linking.disambiguation import Disambiguator
from ernie_kg.linking.fewrel import (
    fewrel_kg,
    fewrel_mentions,
    fewrel_triples,
    instance_text,
    read_fewrel,
    split_fewrel,
)
from ernie_kg.linking.fuzzy import FuzzyAliasIndex
from ernie_kg.linking.linker import DEFAULT_LINKER_CONFIG, EntityLinker, LinkedMention
from ernie_kg.linking.mentions import LinkerConfigError, MentionDetector
from ernie_kg.linking.normalize import normalize
from ernie_kg.linking.processor import DEFAULT_MARKERS, ErnieKGProcessor

__all__ = [
    "ALIASES_FILE",
    "COMPONENT_NAME",
    "DEFAULT_LINKER_CONFIG",
    "DEFAULT_MARKERS",
    "AliasTable",
    "ContextModel",
    "Disambiguator",
    "EntityLinker",
    "EntityLinkerComponent",
    "EntitySpan",
    "ErnieKGProcessor",
    "FuzzyAliasIndex",
    "LinkedMention",
    "LinkerConfigError",
    "MentionDetector",
    "align_batch",
    "align_entities",
    "align_offsets",
    "fewrel_kg",
    "fewrel_mentions",
    "fewrel_triples",
    "instance_text",
    "normalize",
    "read_fewrel",
    "resolve_overlaps",
    "row_lookup",
    "split_fewrel",
]
