"""Scores of the user study: vote counts, selection percentage, Eq. (1) rank-n with ties."""

import csv
import json

import numpy as np
import pytest

from moss_tf.study import (
    StudyError,
    StudyResults,
    rank_n_percentage,
    selection_percentage,
    top_n_mask,
    vote_counts,
)

METHODS = ["moss", "jorder", "spanet"]
IMAGES = ["a", "b", "c", "d"]

# Hand-made tallies (rows: images a-d, columns: moss, jorder, spanet).
#   a: 5 3 0 -> top-1 {moss}          top-2 {moss, jorder}   top-3 {moss, jorder} (spanet: no vote)
#   b: 2 2 1 -> top-1 {moss, jorder}  top-2 {moss, jorder}   top-3 all
#   c: 0 1 4 -> top-1 {spanet}        top-2 {spanet, jorder} top-3 {spanet, jorder}
#   d: 0 0 0 -> never shown: not in N, so N = 3
COUNTS = np.array([[5, 3, 0], [2, 2, 1], [0, 1, 4], [0, 0, 0]])


def votes_for(counts):
    return [
        (IMAGES[j], METHODS[i])
        for j in range(counts.shape[0])
        for i in range(counts.shape[1])
        for _ in range(counts[j, i])
    ]


def test_vote_counts_tally_votes_per_image_and_method():
    np.testing.assert_array_equal(vote_counts(votes_for(COUNTS), METHODS, IMAGES), COUNTS)


def test_vote_counts_reject_a_vote_outside_the_study():
    with pytest.raises(StudyError, match="'rescan'"):
        vote_counts([("a", "rescan")], METHODS, IMAGES)


def test_selection_percentage_is_the_share_of_all_votes():
    # 7, 6 and 5 of the 18 votes.
    np.testing.assert_allclose(
        selection_percentage(COUNTS), [100 * 7 / 18, 100 * 6 / 18, 100 * 5 / 18]
    )
    assert np.isnan(selection_percentage(np.zeros((2, 3), int))).all()


def test_rank_n_matches_hand_computed_eq_1_with_ties_counting_for_all():
    expected = 100 * np.array(
        [
            # rank-1 rank-2 rank-3   (N = 3 images with votes)
            [2 / 3, 2 / 3, 2 / 3],  # moss: a, b (tie) | a, b | a, b
            [1 / 3, 3 / 3, 3 / 3],  # jorder: b (tie) | a, b, c | a, b, c
            [1 / 3, 1 / 3, 2 / 3],  # spanet: c | c | b, c
        ]
    )
    np.testing.assert_allclose(rank_n_percentage(COUNTS), expected)


def test_a_tie_at_the_nth_place_puts_every_tied_method_in_top_n():
    counts = np.array([[3, 1, 1, 0]])
    np.testing.assert_array_equal(top_n_mask(counts, 1), [[True, False, False, False]])
    # Competition ranking 1, 2, 2, 4: both methods tied for second are in the top 2.
    np.testing.assert_array_equal(top_n_mask(counts, 2), [[True, True, True, False]])
    np.testing.assert_array_equal(top_n_mask(counts, 3), [[True, True, True, False]])
    # The method without a vote is never among the most selected, even at n = 4.
    np.testing.assert_array_equal(top_n_mask(counts, 4), [[True, True, True, False]])


def test_rank_n_rejects_n_outside_one_to_the_number_of_methods():
    with pytest.raises(StudyError, match=r"1\.\.3"):
        top_n_mask(COUNTS, 4)
    with pytest.raises(StudyError):
        top_n_mask(COUNTS, 0)


def test_rank_n_is_undefined_without_votes():
    assert np.isnan(rank_n_percentage(np.zeros((4, 3), int))).all()


def test_results_table_csv_and_json_carry_the_same_scores(tmp_path):
    results = StudyResults(tuple(METHODS), tuple(IMAGES), COUNTS, evaluators=2)
    assert results.total_votes == 18
    assert results.images_with_votes == 3

    table = results.format_table()
    assert "evaluators: 2" in table
    assert "N = 3 of 4" in table
    # moss row: 7 votes, 38.89 %, rank-1..3 66.67 %.
    moss_row = next(line for line in table.splitlines() if line.startswith("moss"))
    assert moss_row.split() == ["moss", "7", "38.89", "66.67", "66.67", "66.67"]

    results.write_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [row["method"] for row in rows] == METHODS
    assert float(rows[1]["rank_2_pct"]) == pytest.approx(100.0)
    assert float(rows[2]["selection_pct"]) == pytest.approx(100 * 5 / 18, abs=1e-3)

    results.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["images_with_votes"] == 3
    assert data["per_image_votes"]["c"] == {"moss": 0, "jorder": 1, "spanet": 4}
    assert data["methods"][2]["rank_3_pct"] == pytest.approx(100 * 2 / 3, abs=1e-3)


def test_results_without_votes_show_dashes_not_numbers(tmp_path):
    results = StudyResults(tuple(METHODS), tuple(IMAGES), np.zeros((4, 3), int), evaluators=0)
    moss_row = next(line for line in results.format_table().splitlines() if "moss" in line)
    assert moss_row.split() == ["moss", "0", "-", "-", "-", "-"]
    results.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["methods"][0]["selection_pct"] is None
