"""Analysis of the models: operation counts and energy estimates (Tables 1-2 conventions)."""

from slac.analysis.ops import (
    DATASETS,
    ENERGY_TABLES,
    PAPER_DISCREPANCIES,
    PAPER_ROWS,
    EnergyTable,
    LayerOps,
    OpCount,
    PaperRow,
    count_ops,
    head_ops,
    layer_kind,
    paper_comparison,
    register_head_ops,
)

__all__ = [
    "DATASETS",
    "ENERGY_TABLES",
    "PAPER_DISCREPANCIES",
    "PAPER_ROWS",
    "EnergyTable",
    "LayerOps",
    "OpCount",
    "PaperRow",
    "count_ops",
    "head_ops",
    "layer_kind",
    "paper_comparison",
    "register_head_ops",
]
