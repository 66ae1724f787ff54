"""Derived columns and HAVING evaluated on released values alone (enclave/disclosure/derived.py).

The expressions come from the check stage itself, so these tests also pin the form it hands over."""

from __future__ import annotations

import numpy as np
import pytest
import sqlglot
from sqlglot import exp

from enclave.check import check
from enclave.disclosure.derived import evaluate, keep

NAN = np.nan


def expr(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read="duckdb")


def test_precedence_is_sql_s():
    values = {"a": np.array([2.0, 3.0]), "b": np.array([4.0, 5.0])}
    np.testing.assert_array_equal(evaluate(expr("1 + a * b - b / a"), values), [1 + 8 - 2, 1 + 15 - 5 / 3])
    np.testing.assert_array_equal(evaluate(expr("(1 + a) * -b"), values), [-12.0, -20.0])
    np.testing.assert_array_equal(evaluate(expr("a - b - 1"), values), [-3.0, -3.0])  # left-associative
    np.testing.assert_array_equal(evaluate(expr("100.0 * a / b"), values), [50.0, 60.0])


def test_division_by_zero_or_by_a_non_positive_noisy_count_has_no_value():
    values = {"s": np.array([10.0, 10.0, 10.0, 10.0]), "n": np.array([4.0, 0.0, -3.0, 2.0]),
              "d": np.array([2.0, 0.0, -2.0, 1.0])}
    np.testing.assert_array_equal(evaluate(expr("s / n"), values, counts={"n"}), [2.5, NAN, NAN, 5.0])
    np.testing.assert_array_equal(evaluate(expr("s / (nullif(n, 0))"), values, counts={"n"}), [2.5, NAN, NAN, 5.0])
    # a divisor that is not a count may be negative: only zero gives no value
    np.testing.assert_array_equal(evaluate(expr("s / d"), values, counts={"n"}), [5.0, NAN, -5.0, 10.0])
    np.testing.assert_array_equal(evaluate(expr("s / (n - 2)"), values, counts={"n"}), [5.0, -5.0, -2.0, NAN])


def test_no_value_propagates_and_nullif_makes_one():
    values = {"a": np.array([NAN, 1.0, 0.0]), "b": np.array([1.0, NAN, 2.0])}
    np.testing.assert_array_equal(evaluate(expr("a + b"), values), [NAN, NAN, 2.0])
    np.testing.assert_array_equal(evaluate(expr("round(a * 2, 1)"), values), [NAN, 2.0, 0.0])
    np.testing.assert_array_equal(evaluate(expr("b / nullif(a, 0)"), values), [NAN, NAN, NAN])
    huge = {"a": np.array([1e308])}
    np.testing.assert_array_equal(evaluate(expr("a * 10"), huge), [NAN])  # an overflow is no value either


@pytest.mark.parametrize(("sql", "expected"), [
    ("round(a)", [3.0, -3.0, 2.0, 0.0]),
    ("round(a, 1)", [2.5, -2.5, 1.5, 0.1]),
    ("round(a, -1)", [0.0, -0.0, 0.0, 0.0]),
    ("round(a * 100, -2)", [300.0, -300.0, 200.0, 0.0]),
])
def test_round_takes_halves_away_from_zero_to_its_digits(sql, expected):
    values = {"a": np.array([2.5, -2.5, 1.54, 0.05])}
    np.testing.assert_allclose(evaluate(expr(sql), values), expected, atol=1e-12)


def test_draws_by_groups_evaluate_elementwise():
    draws = {"s": np.array([[10.0, 20.0, 30.0], [12.0, 18.0, 33.0]]), "n": np.array([[5.0, 4.0, 0.0], [4.0, 6.0, 3.0]])}
    result = evaluate(expr("s / n"), draws, counts={"n"})
    assert result.shape == (2, 3)
    np.testing.assert_array_equal(result, [[2.0, 5.0, NAN], [3.0, 3.0, 11.0]])


def test_keep_applies_sql_three_valued_logic():
    values = {"n": np.array([30.0, 5.0, NAN, 12.0]), "r": np.array([0.5, 2.0, 1.0, NAN])}
    keys = {"school": np.array(["A", "B", None, "D"], dtype=object)}
    np.testing.assert_array_equal(keep(expr("n > 10"), values, keys), [True, False, False, True])
    np.testing.assert_array_equal(keep(expr("NOT n > 10"), values, keys), [False, True, False, False])  # NOT unknown
    np.testing.assert_array_equal(keep(expr("n > 10 OR r > 1"), values, keys), [True, True, False, True])
    np.testing.assert_array_equal(keep(expr("n > 10 AND r < 1"), values, keys), [True, False, False, False])
    np.testing.assert_array_equal(keep(expr("r IS NULL OR school IS NULL"), values, keys), [False, False, True, True])
    np.testing.assert_array_equal(keep(expr("NOT r IS NULL AND school <> 'B'"), values, keys),
                                  [True, False, False, False])
    np.testing.assert_array_equal(keep(expr("n BETWEEN 5 AND 12"), values, keys), [False, True, False, True])
    np.testing.assert_array_equal(keep(expr("n = NULL OR TRUE"), values, keys), [True, True, True, True])


def test_keep_on_numeric_keys_and_values_that_do_not_compare():
    values = {"n": np.array([1.0, 2.0, 3.0])}
    keys = {"grade": np.array([0, 5, None], dtype=object), "school": np.array(["A", "B", "C"], dtype=object)}
    np.testing.assert_array_equal(keep(expr("grade >= 1"), values, keys), [False, True, False])
    np.testing.assert_array_equal(keep(expr("school > 1"), values, keys), [False, False, False])  # unknown


def test_keep_on_draws_broadcasts_keys():
    draws = {"n": np.array([[30.0, 5.0], [8.0, 15.0]])}
    keys = {"school": np.array(["A", "B"], dtype=object)}
    np.testing.assert_array_equal(keep(expr("n > 10 AND school <> 'C'"), draws, keys), [[True, False], [False, True]])


def test_what_the_check_hands_over_evaluates(rules, manifest):
    query = check("SELECT school_year, count(*) AS n, round(100.0 * sum(suspensions) / count(*), 1) AS rate "
                  "FROM enrollments GROUP BY school_year HAVING rate > 10 AND school_year <> 2020", rules,
                  manifest).query
    rate = query.columns[2]
    values = {"n": np.array([200.0, 100.0, 0.0]), "__h0": np.array([30.0, 5.0, 7.0])}
    np.testing.assert_array_equal(evaluate(rate.expr, values, counts={"n"}), [15.0, 5.0, NAN])
    keys = {"school_year": np.array([2019, 2020, 2021], dtype=object)}
    np.testing.assert_array_equal(keep(query.having, values, keys, counts={"n"}), [True, False, False])


def test_an_expression_outside_the_grammar_is_refused_not_guessed():
    with pytest.raises(ValueError, match="not derived arithmetic"):
        evaluate(expr("abs(a)"), {"a": np.array([1.0])})
    with pytest.raises(ValueError, match="not a HAVING condition"):
        keep(expr("a IN (1, 2)"), {"a": np.array([1.0])}, {})
