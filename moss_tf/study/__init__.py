"""The user study of the paper (docs/method.md §5, supplementary §C) as a tool.

Evaluators compare the results of several deraining methods on real rainy
photos, where no ground truth exists: each visit shows 10 random groups (the
rainy original as the reference, the results shuffled and anonymous) and the
evaluator picks the best result of each. The votes give the averaged selection
percentage per method and the rank-n scores of Eq. (1).

Command line::

    python -m moss_tf.study serve --originals real/ --method moss=out/moss \\
        --method jorder=out/jorder --db votes.sqlite [--host 0.0.0.0] [--trust-proxy]
    python -m moss_tf.study results --db votes.sqlite --csv r.csv --json r.json --plots plots/

Modules: ``study`` (folders -> :class:`Study`), ``store`` (SQLite votes),
``app`` (the Flask voting page), ``images`` (every image re-encoded alike),
``scores`` (Eq. 1 and the tallies), ``plots`` (the paper's Fig. 2-4).
"""

from moss_tf.study.app import create_app, draw_visit, make_study_server
from moss_tf.study.scores import (
    StudyResults,
    rank_n_percentage,
    selection_percentage,
    top_n_mask,
    vote_counts,
)
from moss_tf.study.store import Group, VoteStore
from moss_tf.study.study import IMAGE_SUFFIXES, Study, StudyError, build_study, parse_method_arg

__all__ = [
    "IMAGE_SUFFIXES",
    "Group",
    "Study",
    "StudyError",
    "StudyResults",
    "VoteStore",
    "build_study",
    "create_app",
    "draw_visit",
    "make_study_server",
    "parse_method_arg",
    "rank_n_percentage",
    "selection_percentage",
    "top_n_mask",
    "vote_counts",
]
