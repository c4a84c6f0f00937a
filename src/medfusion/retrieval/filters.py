"""A small, safe filter language over index metadata: ``view = 'PA' and age > 60``.

Grammar (keywords are case-insensitive, column names are case-sensitive)::

    expr       := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | primary
    primary    := "(" expr ")" | predicate
    predicate  := column op literal
                | column ["NOT"] "IN" "(" literal ("," literal)* ")"
                | column ["NOT"] "LIKE" string
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    literal    := string | ["-"] number | "TRUE" | "FALSE"
    string     := "'" ... "'"            ('' inside a string is one quote)
    column     := [A-Za-z_][A-Za-z0-9_]*

An expression is tokenised and parsed by recursive descent into a small AST of dataclasses
(never ``eval``), then compiled either to a boolean mask over a pandas DataFrame
(:func:`to_mask`) or to a parameterised SQL fragment for psycopg (:func:`to_sql`).
Both follow SQL's three-valued logic: a comparison with a missing (null/NaN) value is
unknown, ``NOT unknown`` is unknown, and a row is kept only when the whole expression is
true, so the two compilations select the same rows. ``LIKE`` follows PostgreSQL: ``%``
matches any run of characters, ``_`` one character, ``\\`` escapes the next one, and the
match is case-sensitive. Text order comparisons use code-point order (``COLLATE "C"``).

Column kinds: ``"text"``, ``"integer"``, ``"float"``, ``"bool"`` (see :func:`column_kind`).
A string literal compares only with a text column, a number only with a numeric column,
``TRUE``/``FALSE`` only with a bool column (``=``, ``!=``, ``IN``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

Literal = str | int | float | bool

#: Metadata column kinds known to the filter language and the stores.
KINDS = ("text", "integer", "float", "bool")

_OPS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_KEYWORDS = {"and", "or", "not", "in", "like", "true", "false"}
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      |(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      |(?P<string>'(?:[^']|'')*')
      |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<op><=|>=|<>|!=|=|<|>)
      |(?P<punct>[(),-])""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Compare:
    """``column op value``; ``op`` is one of ``= != < <= > >=``."""

    column: str
    op: str
    value: Literal


@dataclass(frozen=True)
class In:
    """``column [NOT] IN (values...)``."""

    column: str
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True)
class Like:
    """``column [NOT] LIKE pattern``."""

    column: str
    pattern: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


Expr = Compare | In | Like | And | Or | Not


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, keyword, op, punct, end
    text: str
    pos: int
    value: Literal | None = None


def _syntax_error(expression: str, pos: int, message: str) -> ValueError:
    return ValueError(f"invalid filter: {message} at position {pos}\n  {expression}\n  {' ' * pos}^")


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            problem = "unterminated string" if expression[pos] == "'" else "unexpected character"
            raise _syntax_error(expression, pos, f"{problem} {expression[pos:pos + 10]!r}")
        kind, text = match.lastgroup, match.group()
        if kind == "number":
            number = float(text) if any(c in text for c in ".eE") else int(text)
            number = float(number) if abs(number) >= 2**63 else number  # beyond bigint
            tokens.append(_Token("number", text, pos, number))
        elif kind == "string":
            tokens.append(_Token("string", text, pos, text[1:-1].replace("''", "'")))
        elif kind == "name" and text.lower() in _KEYWORDS:
            tokens.append(_Token("keyword", text.lower(), pos))
        elif kind != "space":
            tokens.append(_Token(kind, text, pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        token = self.peek()
        if token.kind == kind and token.text == text:
            self.index += 1
            return True
        return False

    def fail(self, expected: str) -> ValueError:
        token = self.peek()
        found = "the end" if token.kind == "end" else repr(token.text)
        return _syntax_error(self.expression, token.pos, f"expected {expected}, found {found}")

    def expect(self, kind: str, text: str) -> None:
        if not self.accept(kind, text):
            raise self.fail(repr(text))

    def parse(self) -> Expr:
        expr = self.parse_or()
        if self.peek().kind != "end":
            raise self.fail("AND, OR or the end of the expression")
        return expr

    def parse_or(self) -> Expr:
        expr = self.parse_and()
        while self.accept("keyword", "or"):
            expr = Or(expr, self.parse_and())
        return expr

    def parse_and(self) -> Expr:
        expr = self.parse_not()
        while self.accept("keyword", "and"):
            expr = And(expr, self.parse_not())
        return expr

    def parse_not(self) -> Expr:
        if self.accept("keyword", "not"):
            return Not(self.parse_not())
        if self.accept("punct", "("):
            expr = self.parse_or()
            self.expect("punct", ")")
            return expr
        return self.parse_predicate()

    def parse_predicate(self) -> Expr:
        token = self.next()
        if token.kind != "name":
            self.index -= 1
            raise self.fail("a column name, NOT or '('")
        column = token.text
        if self.peek().kind == "op":
            op = _OPS[self.next().text]
            return Compare(column, op, self.parse_literal())
        negated = self.accept("keyword", "not")
        if self.accept("keyword", "in"):
            self.expect("punct", "(")
            values = [self.parse_literal()]
            while self.accept("punct", ","):
                values.append(self.parse_literal())
            self.expect("punct", ")")
            return In(column, tuple(values), negated)
        if self.accept("keyword", "like"):
            if self.peek().kind != "string":
                raise self.fail("a quoted pattern after LIKE")
            return Like(column, str(self.next().value), negated)
        raise self.fail("IN or LIKE after NOT" if negated else "an operator (= != <> < <= > >= IN LIKE)")

    def parse_literal(self) -> Literal:
        token = self.peek()
        if token.kind in ("string", "number"):
            self.index += 1
            return token.value  # type: ignore[return-value]
        if token.kind == "keyword" and token.text in ("true", "false"):
            self.index += 1
            return token.text == "true"
        if token.kind == "punct" and token.text == "-":
            self.index += 1
            if self.peek().kind != "number":
                raise self.fail("a number after '-'")
            return -self.next().value  # type: ignore[operator]
        raise self.fail("a literal (quoted string, number, TRUE or FALSE)")


def parse(expression: str) -> Expr:
    """Parse a filter expression into its AST.

    Raises:
        ValueError: on a syntax error; the message shows the expression, the position and
            the unexpected token.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"filter: expected a non-empty expression string, received {expression!r}")
    return _Parser(expression).parse()


def columns(expr: Expr) -> set[str]:
    """Names of the columns an expression refers to."""
    if isinstance(expr, (And, Or)):
        return columns(expr.left) | columns(expr.right)
    if isinstance(expr, Not):
        return columns(expr.operand)
    return {expr.column}


def column_kind(series: pd.Series) -> str:
    """The filter kind of a pandas column: bool, integer, float, else text."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "text"


def _literal_kind(value: Literal) -> str:
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"


def check(expr: Expr, kinds: Mapping[str, str], expression: str = "") -> None:
    """Check that an AST's columns exist and its literals suit the columns' kinds.

    Args:
        expr: the parsed expression.
        kinds: {column: kind} of the metadata, kinds from :data:`KINDS`.
        expression: the source text, quoted in messages.

    Raises:
        ValueError: naming an unknown column (with the known ones) or a literal whose type
            does not suit the column's kind.
    """
    where = f" in filter {expression!r}" if expression else ""
    if isinstance(expr, (And, Or)):
        check(expr.left, kinds, expression)
        check(expr.right, kinds, expression)
        return
    if isinstance(expr, Not):
        check(expr.operand, kinds, expression)
        return
    if expr.column not in kinds:
        raise ValueError(
            f"unknown column {expr.column!r}{where}; known columns: {', '.join(sorted(kinds))}"
        )
    kind = kinds[expr.column]
    if isinstance(expr, Like):
        if kind != "text":
            raise ValueError(f"LIKE needs a text column{where}; {expr.column!r} is {kind}")
        return
    values = expr.values if isinstance(expr, In) else (expr.value,)
    expected = {"text": "text", "integer": "number", "float": "number", "bool": "bool"}[kind]
    for value in values:
        if _literal_kind(value) != expected:
            shown = {"text": "a quoted string", "number": "a number", "bool": "TRUE or FALSE"}
            raise ValueError(
                f"type mismatch{where}: column {expr.column!r} is {kind}, compare it with "
                f"{shown[expected]}; received {value!r}"
            )
    if kind == "bool" and isinstance(expr, Compare) and expr.op not in ("=", "!="):
        raise ValueError(f"bool column {expr.column!r} supports only = and !={where}")


def _compile(expression: str | Expr, kinds: Mapping[str, str]) -> Expr:
    odd = {column: kind for column, kind in kinds.items() if kind not in KINDS}
    if odd:
        raise ValueError(f"kinds: expected kinds from {KINDS}, received {odd}")
    expr = parse(expression) if isinstance(expression, str) else expression
    check(expr, kinds, expression if isinstance(expression, str) else "")
    return expr


_COMPARE: dict[str, Callable[[np.ndarray, Literal], np.ndarray]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_NUMPY = {"text": object, "integer": np.int64, "float": np.float64, "bool": bool}


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts, escaped = [], False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            parts.append({"%": ".*", "_": "."}.get(char, re.escape(char)))
    return re.compile("".join(parts), re.DOTALL)


def _predicate(expr: Compare | In | Like, values: np.ndarray) -> np.ndarray:
    if isinstance(expr, Compare):
        return np.asarray(_COMPARE[expr.op](values, expr.value), dtype=bool)
    if isinstance(expr, In):
        found = np.zeros(len(values), dtype=bool)
        for value in expr.values:
            found |= np.asarray(values == value, dtype=bool)
        return ~found if expr.negated else found
    regex = _like_regex(expr.pattern)
    found = np.fromiter((regex.fullmatch(v) is not None for v in values), bool, len(values))
    return ~found if expr.negated else found


def _mask(expr: Expr, frame: pd.DataFrame, kinds: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, known) arrays of Kleene logic: true implies known."""
    if isinstance(expr, Not):
        true, known = _mask(expr.operand, frame, kinds)
        return ~true & known, known
    if isinstance(expr, (And, Or)):
        a_true, a_known = _mask(expr.left, frame, kinds)
        b_true, b_known = _mask(expr.right, frame, kinds)
        if isinstance(expr, And):
            a_false, b_false = a_known & ~a_true, b_known & ~b_true
            return a_true & b_true, (a_known & b_known) | a_false | b_false
        return a_true | b_true, (a_known & b_known) | a_true | b_true
    column = frame[expr.column]
    known = column.notna().to_numpy()
    true = np.zeros(len(frame), dtype=bool)
    true[known] = _predicate(expr, column[known].to_numpy(dtype=_NUMPY[kinds[expr.column]]))
    return true, known


def to_mask(
    expression: str | Expr, frame: pd.DataFrame, kinds: Mapping[str, str] | None = None
) -> np.ndarray:
    """Rows of ``frame`` for which the filter is true.

    Args:
        expression: filter text or a parsed AST.
        frame: metadata, one row per vector.
        kinds: {column: kind}; inferred with :func:`column_kind` when omitted.

    Returns:
        (N,) bool array, N = ``len(frame)``.

    Raises:
        ValueError: on a syntax error, an unknown column or a type mismatch.

    Examples::

        >>> frame = pd.DataFrame({"view": ["PA", "AP", None], "age": [70, 50, 80]})
        >>> to_mask("view = 'PA' or age > 75", frame).tolist()
        [True, False, True]
    """
    kinds = dict(kinds) if kinds is not None else {c: column_kind(frame[c]) for c in frame.columns}
    return _mask(_compile(expression, kinds), frame, kinds)[0]


def quote_identifier(name: str) -> str:
    """Double-quote an SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _sql(expr: Expr, kinds: Mapping[str, str], params: list[Literal]) -> str:
    if isinstance(expr, Not):
        return f"(NOT {_sql(expr.operand, kinds, params)})"
    if isinstance(expr, (And, Or)):
        word = "AND" if isinstance(expr, And) else "OR"
        return f"({_sql(expr.left, kinds, params)} {word} {_sql(expr.right, kinds, params)})"
    column = quote_identifier(expr.column)
    negation = "NOT " if getattr(expr, "negated", False) else ""
    if isinstance(expr, Like):
        params.append(expr.pattern)
        return f"{column} {negation}LIKE %s"
    if isinstance(expr, In):
        params.extend(expr.values)
        return f"{column} {negation}IN ({', '.join(['%s'] * len(expr.values))})"
    params.append(expr.value)
    if kinds[expr.column] == "text" and expr.op not in ("=", "!="):
        column += ' COLLATE "C"'
    return f"{column} {'<>' if expr.op == '!=' else expr.op} %s"


def to_sql(expression: str | Expr, kinds: Mapping[str, str]) -> tuple[str, list[Literal]]:
    """Compile a filter to an SQL boolean fragment with ``%s`` placeholders (psycopg style).

    Identifiers are double-quoted; every literal is a parameter, never spliced into the text.

    Args:
        expression: filter text or a parsed AST.
        kinds: {column: kind} of the table's filterable columns.

    Returns:
        (fragment, params), e.g. ``('("view" = %s AND "age" > %s)', ['PA', 60])``.

    Raises:
        ValueError: on a syntax error, an unknown column or a type mismatch.
    """
    params: list[Literal] = []
    return _sql(_compile(expression, kinds), kinds, params), params
