"""Data code: dataset readers, feature building, collators and pre-training masking."""

from ernie_kg.data.masking import (
    IGNORE_INDEX,
    DeaNoise,
    MaskingVocab,
    dea_noise,
    mask_tokens,
    masking_units,
)

__all__ = ["IGNORE_INDEX", "DeaNoise", "MaskingVocab", "dea_noise", "mask_tokens",
           "masking_units"]
