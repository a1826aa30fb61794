"""ERNIE-KG fusion encoder: config, layers, base model, heads, outputs (HF classes).

Importing this package registers ``model_type="ernie_kg"`` with ``AutoConfig``,
``AutoModel``, ``AutoModelForSequenceClassification`` (text / text-pair classification;
a saved relation classifier still loads as :class:`ErnieKGForRelationClassification`)
and ``AutoModelForPreTraining``.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from ernie_kg.modeling.configuration import LAYER_TYPES, ErnieKGConfig, default_layer_types
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.entity_modules import ErnieKGEntityAttention
from ernie_kg.modeling.heads import (
    ErnieKGEntityPredictionHead,
    ErnieKGForEntityTyping,
    ErnieKGForPreTraining,
    ErnieKGForRelationClassification,
    ErnieKGForSequenceClassification,
)
from ernie_kg.modeling.layers import ErnieKGAggregatorLayer, ErnieKGEncoder
from ernie_kg.modeling.modeling import ENTITY_IDS_FILE, ErnieKGModel, ErnieKGPreTrainedModel
from ernie_kg.modeling.outputs import (
    ErnieKGClassifierOutput,
    ErnieKGModelOutput,
    ErnieKGPreTrainingOutput,
)

AutoConfig.register(ErnieKGConfig.model_type, ErnieKGConfig, exist_ok=True)
AutoModel.register(ErnieKGConfig, ErnieKGModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    ErnieKGConfig, ErnieKGForSequenceClassification, exist_ok=True
)
AutoModelForPreTraining.register(ErnieKGConfig, ErnieKGForPreTraining, exist_ok=True)

__all__ = [
    "ENTITY_IDS_FILE",
    "LAYER_TYPES",
    "EntityLayout",
    "ErnieKGAggregatorLayer",
    "ErnieKGClassifierOutput",
    "ErnieKGConfig",
    "ErnieKGEncoder",
    "ErnieKGEntityAttention",
    "ErnieKGEntityPredictionHead",
    "ErnieKGForEntityTyping",
    "ErnieKGForPreTraining",
    "ErnieKGForRelationClassification",
    "ErnieKGForSequenceClassification",
    "ErnieKGModel",
    "ErnieKGModelOutput",
    "ErnieKGPreTrainedModel",
    "ErnieKGPreTrainingOutput",
    "default_layer_types",
]
