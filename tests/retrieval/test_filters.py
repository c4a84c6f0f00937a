"""The metadata filter language: parsing, pandas masks, SQL fragments, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medfusion.retrieval.filters import And, Compare, In, Like, Not, Or, columns, parse, to_mask, to_sql

KINDS = {"id": "text", "view": "text", "age": "integer", "weight": "float", "urgent": "bool", "name": "text"}


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "view": pd.Series(["PA", "AP", None, "LATERAL", "PA"], dtype=object),
            "age": pd.Series([70, 50, 80, None, 61], dtype="Int64"),
            "weight": [70.5, np.nan, 60.0, 80.0, 55.5],
            "urgent": pd.Series([True, False, None, True, False], dtype="boolean"),
            "name": ["O'Brien", "50%", "a_b", "ab", None],
        }
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("view = 'PA'", Compare("view", "=", "PA")),
        ("age >= 60", Compare("age", ">=", 60)),
        ("age <> -3", Compare("age", "!=", -3)),
        ("weight < 1.5e2", Compare("weight", "<", 150.0)),
        ("urgent = TRUE", Compare("urgent", "=", True)),
        ("name = 'O''Brien'", Compare("name", "=", "O'Brien")),
        ("view IN ('PA', 'AP')", In("view", ("PA", "AP"))),
        ("age not in (1, 2.5)", In("age", (1, 2.5), negated=True)),
        ("name LIKE 'a%'", Like("name", "a%")),
        ("name Not Like '_b'", Like("name", "_b", negated=True)),
        ("a = 1 or b = 2 and c = 3", Or(Compare("a", "=", 1), And(Compare("b", "=", 2), Compare("c", "=", 3)))),
        ("(a = 1 OR b = 2) AND c = 3", And(Or(Compare("a", "=", 1), Compare("b", "=", 2)), Compare("c", "=", 3))),
        ("not not a = 1", Not(Not(Compare("a", "=", 1)))),
        ("NOT (a = 1) and b = 2", And(Not(Compare("a", "=", 1)), Compare("b", "=", 2))),
    ],
)
def test_parse(expression, expected):
    assert parse(expression) == expected


def test_columns():
    assert columns(parse("view = 'PA' and (age > 3 or not name like 'x')")) == {"view", "age", "name"}


@pytest.mark.parametrize(
    ("expression", "rows"),
    [
        ("view = 'PA'", "ae"),
        ("view != 'PA'", "bd"),  # null view (c) is unknown, not true
        ("not view = 'PA'", "bd"),
        ("not (view = 'PA' or age > 75)", "b"),  # c: null or true = true → not → false
        ("age > 60", "ace"),
        ("age >= 61 and age <= 70", "ae"),
        ("age > 60.5", "ace"),
        ("weight < 70", "ce"),
        ("urgent = true", "ad"),
        ("urgent != TRUE", "be"),
        ("view IN ('PA', 'AP')", "abe"),
        ("view NOT IN ('PA')", "bd"),
        ("age in (50, 80)", "bc"),
        ("name like 'O%'", "a"),
        ("name like '50\\%'", "b"),
        ("name like 'a_b'", "c"),
        ("name like 'a\\_b'", "c"),
        ("name not like 'a%'", "ab"),
        ("view < 'B'", "b"),  # code-point order: 'AP' < 'B' < 'LATERAL' < 'PA'
        ("view = 'PA' and age > 65 or id = 'd'", "ad"),
        ("age > 60 or view = 'AP'", "abce"),
        ("not (age > 60 and view = 'PA')", "bd"),  # c: true and null = null; d: null and false = false
        ("id = 'e'", "e"),
    ],
)
def test_mask(frame, expression, rows):
    expected = frame["id"].isin(list(rows)).to_numpy()
    np.testing.assert_array_equal(to_mask(expression, frame), expected)


def test_mask_plain_dtypes():
    frame = pd.DataFrame({"n": [1, 2, 3], "x": [0.5, np.nan, 2.0], "s": ["a", "b", None], "f": [True, False, True]})
    assert to_mask("n > 1 and x > 1", frame).tolist() == [False, False, True]
    assert to_mask("s >= 'b' or f = false", frame).tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("expression", "sql", "params"),
    [
        ("view = 'PA'", '"view" = %s', ["PA"]),
        ("age != 3", '"age" <> %s', [3]),
        ("view < 'M'", '"view" COLLATE "C" < %s', ["M"]),
        (
            "view = 'PA' and (age > 60 or urgent = true)",
            '("view" = %s AND ("age" > %s OR "urgent" = %s))',
            ["PA", 60, True],
        ),
        ("not view in ('a', 'b')", '(NOT "view" IN (%s, %s))', ["a", "b"]),
        ("age not in (1)", '"age" NOT IN (%s)', [1]),
        ("name not like 'x%'", '"name" NOT LIKE %s', ["x%"]),
        ("name = 'x''; DROP TABLE t; --'", '"name" = %s', ["x'; DROP TABLE t; --"]),
    ],
)
def test_sql(expression, sql, params):
    assert to_sql(expression, KINDS) == (sql, params)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "non-empty expression"),
        ("view = 'PA", r"unterminated string \"'PA\" at position 7"),
        ("age >", "expected a literal .* found the end at position 5"),
        ("age > > 3", "found '>' at position 6"),
        ("view = 'PA' age > 3", "expected AND, OR or the end of the expression, found 'age' at position 12"),
        ("(age > 3", r"expected '\)', found the end"),
        ("age ! 3", "unexpected character"),
        ("age not = 3", "expected IN or LIKE after NOT"),
        ("age = -x", "expected a number after '-'"),
        ("age in ()", "expected a literal"),
        ("name like 3", "expected a quoted pattern after LIKE"),
        ("__import__('os')", "expected an operator"),
        ("and = 1", "expected a column name"),
    ],
)
def test_syntax_errors(frame, expression, message):
    with pytest.raises(ValueError, match=message):
        to_mask(expression, frame)


def test_syntax_error_shows_expression_and_caret():
    with pytest.raises(ValueError) as info:
        parse("age > > 3")
    assert str(info.value).splitlines()[1:] == ["  age > > 3", "        ^"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("colour = 'red'", "unknown column 'colour' in filter \"colour = 'red'\"; known columns: age, id, name"),
        ("age = '60'", "column 'age' is integer, compare it with a number; received '60'"),
        ("weight in (1, 'x')", "column 'weight' is float, compare it with a number; received 'x'"),
        ("view = 3", "column 'view' is text, compare it with a quoted string; received 3"),
        ("urgent = 1", "column 'urgent' is bool, compare it with TRUE or FALSE"),
        ("age = true", "column 'age' is integer, compare it with a number; received True"),
        ("urgent > false", "supports only = and !="),
        ("age like '1%'", "LIKE needs a text column"),
    ],
)
def test_semantic_errors(frame, expression, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_mask(expression, frame)
    with pytest.raises(ValueError, match="unknown column|type mismatch|supports only|LIKE needs"):
        to_sql(expression, KINDS)


def test_ast_input_is_checked_too(frame):
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        to_sql(Compare("nope", "=", 1), KINDS)
    assert to_mask(Compare("age", "<", 60), frame).tolist() == [False, True, False, False, False]
