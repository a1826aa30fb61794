"""Entity linking, and only that: the alias table, spaCy mention detection, candidate
generation, disambiguation and the spaCy component (the KB + EntityLinker analogue).

Turning linked text into model inputs is :mod:`ernie_kg.processing`; FewRel files are
:mod:`ernie_kg.data.fewrel`.
"""

from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.component import COMPONENT_NAME, EntityLinkerComponent
from ernie_kg.linking.context import ContextModel
from ernie_kg.linking.disambiguation import Disambiguator
from ernie_kg.linking.fuzzy import FuzzyAliasIndex
from ernie_kg.linking.linker import EntityLinker
from ernie_kg.linking.mentions import LinkedMention, LinkerConfigError, MentionDetector
from ernie_kg.linking.normalize import normalize
from ernie_kg.linking.settings import DEFAULT_LINKER_CONFIG

__all__ = [
    "ALIASES_FILE",
    "COMPONENT_NAME",
    "DEFAULT_LINKER_CONFIG",
    "AliasTable",
    "ContextModel",
    "Disambiguator",
    "EntityLinker",
    "EntityLinkerComponent",
    "FuzzyAliasIndex",
    "LinkedMention",
    "LinkerConfigError",
    "MentionDetector",
    "normalize",
]
