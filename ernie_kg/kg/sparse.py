"""Sparse embedding training: ``sparse=True`` tables and ``torch.optim.SparseAdam``.

Why: PyKEEN's ``nn.Embedding``s are dense, so every step makes a gradient the size of
the whole table and Adam rewrites every row of weights, m and v: at 5M entities a step
costs seconds and the peak is ~6 tables (results/transe_distributed.md). With sparse
embeddings the gradient holds only the rows the batch touched and SparseAdam ("lazy
Adam") updates only those rows' weights and moments. It is another optimiser: a row's
moments decay only when the row is in a batch (results/transe_sparse_quality.md checks
what that costs in MRR). PyKEEN has no switch for it, so the glue is here: the model is
built by PyKEEN as usual and its embedding tables are then marked sparse.
"""

from __future__ import annotations

from typing import Any

from ernie_kg.errors import SettingError

#: The optimizer name PyKEEN's resolver knows, for ``sparse=True``.
SPARSE_OPTIMIZER = "SparseAdam"


def optimizer_name(config: dict[str, Any]) -> str:
    """Adam for dense tables, SparseAdam for sparse ones (same learning rate setting)."""
    if not isinstance(config.get("sparse", False), bool):
        raise SettingError(f"sparse must be True or False, not {config['sparse']!r}")
    return SPARSE_OPTIMIZER if config.get("sparse") else "Adam"


def make_sparse(model: Any) -> Any:
    """Mark every embedding table of the PyKEEN ``model`` sparse, in place; returns it.

    SparseAdam accepts only sparse gradients, so a model with any other trainable
    parameter (an interaction's weights, a non-``Embedding`` representation) is refused
    here, before training, rather than failing at the first step. A regularizer sees the
    looked-up rows (no change); a constrainer (``normalize_entities``) still rewrites
    the whole table after each step through ``post_parameter_update``: correct, but
    dense work again, so large tables should train without it (the default)."""
    from pykeen.nn.representation import Embedding

    tables = [representation._embeddings
              for representation in (*model.entity_representations,
                                     *model.relation_representations)
              if isinstance(representation, Embedding)]
    covered = {id(table.weight) for table in tables}
    dense = [name for name, parameter in model.named_parameters()
             if parameter.requires_grad and id(parameter) not in covered]
    if dense:
        raise SettingError(f"sparse=True needs a model whose only trainable parameters are "
                           f"embedding tables; {type(model).__name__} also trains "
                           f"{', '.join(dense[:3])}: train it without --sparse")
    for table in tables:
        table.sparse = True
    return model
