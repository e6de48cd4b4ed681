"""The paper's tables as data: each row is a set of config overrides and the paper's numbers.

:mod:`moss_tf.paper.experiments` trains and evaluates the rows and writes our
numbers beside the paper's. Adding a table means adding a :class:`TableSpec`
to :data:`TABLES`; no code per table.

The paper's numbers use its convention (docs/method.md §4: RGB uint8, scikit-image
SSIM). Supplementary Table 3 reports the DDN-SIRR test set's ``dense``
(``inputK``, K <= 10) and ``sparse`` (K > 10) halves; Tables 4 and 5 report
the mean over all 20 test images, which :func:`moss_tf.infer.scoring.evaluate`
calls ``overall`` (the Tables 4-5 entries for the full method, 25.35 / 0.898,
are the mean of Table 3's dense and sparse, 22.91 and 27.78).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PAPER_RAINY_INPUT", "SUPERVISED", "TABLES", "Row", "TableSpec"]

PaperScores = Mapping[str, tuple[float, float]]
"""Test split -> (PSNR dB, SSIM) in the paper's convention."""

SUPERVISED = "supervised"
"""The stage of an equal-budget control row: it continues the row's pretrained
network for as many steps as stage ``semi`` trains, on the labeled data only
(stage ``pretrain``'s loss, a fresh optimizer and the ``semi`` learning rate,
as stage ``semi`` starts)."""


@dataclass(frozen=True)
class Row:
    """One column of a paper table (one trained configuration).

    Attributes:
        key: folder name of the row's run directory, e.g. ``"wo_tv"``.
        label: the paper's name for it, e.g. ``"w/o TV"``.
        overrides: ``KEY=VALUE`` config overrides (as ``--set`` takes them),
            applied on top of the table's base config.
        stages: the training stages of the row; ``("pretrain",)`` evaluates
            the pretrained network (the "labeled data only" rows);
            ``("pretrain", SUPERVISED)`` is the equal-budget control of
            stage ``semi`` (see :data:`SUPERVISED`).
        paper: the paper's numbers, split -> (PSNR, SSIM); empty when the
            paper's number is not in docs/method.md or the supplementary material.
    """

    key: str
    label: str
    overrides: tuple[str, ...] = ()
    stages: tuple[str, ...] = ("pretrain", "semi")
    paper: PaperScores = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """A paper table: its rows, where it comes from, and the config it was measured on."""

    name: str
    title: str
    source: str
    default_config: str
    rows: tuple[Row, ...]
    note: str = ""


PAPER_RAINY_INPUT: PaperScores = {"dense": (17.82, 0.787), "sparse": (23.93, 0.858)}
"""The rainy inputs of the DDN-SIRR test set scored against the clean images (docs/method.md §4)."""

_NO_MEMORY = "model.use_memory=false"
_NO_SELF_TRAINING = "semi.self_training=false"


def _sweep(key: str, symbol: str, paper: Mapping[str, tuple[float, float]]) -> tuple[Row, ...]:
    """Rows setting ``key`` to each value of the paper's decay sweep."""
    return tuple(
        Row(
            key=f"{symbol}_{value}",
            label=f"{symbol} = {value}",
            overrides=(f"{key}={value}",),
            paper={"overall": scores},
        )
        for value, scores in paper.items()
    )


TABLE3 = TableSpec(
    name="table3",
    title="Ablation study on DDN-SIRR",
    source="supplementary Table 3",
    default_config="configs/ddn_sirr.yaml",
    rows=(
        Row(
            "basic",
            "Basic",
            (_NO_MEMORY, "model.use_skip=false", _NO_SELF_TRAINING, "semi.tv_weight=0.0"),
            paper={"dense": (19.99, 0.835), "sparse": (25.74, 0.881)},
        ),
        Row(
            "wo_memory",
            "w/o Memory",
            (_NO_MEMORY,),
            paper={"dense": (22.21, 0.870), "sparse": (26.82, 0.906)},
        ),
        Row(
            "wo_self_training",
            "w/o Self-Training",
            (_NO_SELF_TRAINING,),
            paper={"dense": (20.99, 0.860), "sparse": (25.83, 0.890)},
        ),
        Row(
            "wo_tv",
            "w/o TV",
            ("semi.tv_weight=0.0",),
            paper={"dense": (22.68, 0.876), "sparse": (27.58, 0.908)},
        ),
        Row(
            "wo_skip",
            "w/o Skip-Connect",
            ("model.use_skip=false",),
            paper={"dense": (22.00, 0.858), "sparse": (26.80, 0.900)},
        ),
        Row("ours", "Ours", (), paper={"dense": (22.91, 0.883), "sparse": (27.78, 0.912)}),
    ),
)

TABLE4 = TableSpec(
    name="table4",
    title="Memory decay rate τ (Eq. 3) on DDN-SIRR",
    source="supplementary Table 4",
    default_config="configs/ddn_sirr.yaml",
    rows=(
        *_sweep(
            "model.memory_decay",
            "tau",
            {
                "0": (25.06, 0.876),
                "0.9": (25.24, 0.896),
                "0.99": (25.01, 0.894),
                "0.999": (25.35, 0.898),
                "0.9999": (25.19, 0.894),
                "1": (24.13, 0.885),
            },
        ),
        Row("wo_memory", "w/o Memory", (_NO_MEMORY,), paper={"overall": (24.52, 0.888)}),
    ),
    note="τ also acts in stage pretrain (the memory is updated in every training pass), "
    "so each τ has its own pretrained network.",
)

TABLE5 = TableSpec(
    name="table5",
    title="Target network decay rate v (Eq. 7) on DDN-SIRR",
    source="supplementary Table 5",
    default_config="configs/ddn_sirr.yaml",
    rows=(
        *_sweep(
            "semi.target_decay",
            "v",
            {
                "0": (25.17, 0.887),
                "0.9": (24.93, 0.890),
                "0.99": (25.28, 0.892),
                "0.999": (25.35, 0.898),
                "0.9999": (25.04, 0.885),
                "1": (24.15, 0.8884),
            },
        ),
        Row(
            "wo_self_training",
            "w/o Self-Training",
            (_NO_SELF_TRAINING,),
            paper={"overall": (23.41, 0.875)},
        ),
    ),
)

_FORTY_PERCENT = "data.labeled.fraction=0.4"

RAIN200H = TableSpec(
    name="rain200h",
    title="Rain200H with 10% and 40% of the training pairs labeled",
    source="main paper, Rain200H comparison (supplementary Figs. 6-7 show its images)",
    default_config="configs/rain200h_10pct.yaml",
    rows=(
        Row("labeled_10pct", "10% labeled, labeled data only", stages=("pretrain",)),
        Row("semi_10pct", "10% labeled + unlabeled (MOSS)"),
        Row(
            "labeled_40pct",
            "40% labeled, labeled data only",
            (_FORTY_PERCENT,),
            stages=("pretrain",),
        ),
        Row("semi_40pct", "40% labeled + unlabeled (MOSS)", (_FORTY_PERCENT,)),
    ),
    note="The paper's Rain200H numbers are in the main paper, which neither docs/method.md nor the "
    "supplementary material here reproduces; the paper columns stay empty.",
)


def _transfer_rows(labeled: str, unlabeled: str) -> tuple[Row, ...]:
    """Pretrained, the equal-budget supervised control, and MOSS from the same pretrain."""
    return (
        Row("pretrained", f"stage pretrain ({labeled} labeled)", stages=("pretrain",)),
        Row(
            "supervised",
            "+ the same steps on the labeled data only (control)",
            stages=("pretrain", SUPERVISED),
        ),
        Row("moss", f"+ stage semi ({unlabeled} unlabeled): MOSS"),
    )


_TRANSFER_NOTE = (
    "The control and MOSS both continue the same pretrained network for the same number of "
    "steps; only MOSS sees the unlabeled images, whose rain style is target_style."
)

DEMO = TableSpec(
    name="demo",
    title="Transfer to a rain style that only the unlabeled photographs have",
    source="the built-in demo",
    default_config="configs/demo.yaml",
    rows=_transfer_rows("style A", "style B"),
    note="Not a paper table: the demo's evidence that the unlabeled photographs help. "
    + _TRANSFER_NOTE,
)

TRANSFER = TableSpec(
    name="transfer",
    title="The released network: transfer to a rain style that only the unlabeled images have",
    source="saved_models/MODEL_CARD.md, Transfer",
    default_config="configs/release_transfer.yaml",
    rows=_transfer_rows("the realistic rain", "steep additive rain"),
    note="Not a paper table: the released network on ../shared/data (hours on a CPU). "
    + _TRANSFER_NOTE,
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (TABLE3, TABLE4, TABLE5, RAIN200H, DEMO, TRANSFER)
}
"""Every table ``python -m moss_tf.paper.experiments`` can reproduce, by name."""
