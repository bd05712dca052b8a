"""A small, safe expression evaluator for derived fields and conditions.

Lot files come from users, so ``eval``/``exec`` are out of the question. An
expression is parsed with :mod:`ast` and only a whitelist of node types is
accepted: literals, names, arithmetic, comparisons, boolean logic, the
conditional expression, subscripts/attribute reads on plain data
(``vars.site`` or ``vars["site"]``), and calls of a fixed set of functions.
Compiled expressions are closures, so evaluation never walks the AST again.
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from mockfleet.mock.generators.syntax import ExprError as ExprError  # re-exported

Env = Mapping[str, Any]
Compiled = Callable[[Env], Any]

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: op.add,
    ast.Sub: op.sub,
    ast.Mult: op.mul,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,
    ast.Pow: op.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: op.neg,
    ast.UAdd: op.pos,
    ast.Not: op.not_,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "len": len,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
    "clamp": _clamp,
    "upper": lambda s: str(s).upper(),
    "lower": lambda s: str(s).lower(),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "true": True, "false": False, "null": None}
_MAX_POW = 1000  # 10 ** 10 ** 10 would hang a device; no sensor needs exponents like that
_MAX_BITS = 4096  # integers beyond this are no sensor value, only a way to hang a device
_MAX_ITEMS = 100_000


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, int | float) and abs(b) > _MAX_POW:
        raise ExprError(f"exponent {b} is too large")
    # (10 ** 999) ** 999 passes the exponent check but is a 3-million-bit integer
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a.bit_length() * b > _MAX_BITS:
        raise ExprError("result of ** is too large")
    return op.pow(a, b)


def _mul(a: Any, b: Any) -> Any:
    # 'x' * 10 ** 9 would allocate a gigabyte in the device
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, str | list) and isinstance(n, int) and len(seq) * n > _MAX_ITEMS:
            raise ExprError("repeated string or list is too long")
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > _MAX_BITS:
        raise ExprError("result of * is too large")
    return op.mul(a, b)


#: operators that can make huge values from small expressions, with size checks
_GUARDED: dict[type[ast.operator], Callable[[Any, Any], Any]] = {ast.Pow: _pow, ast.Mult: _mul}


def _get(container: Any, key: Any) -> Any:
    if isinstance(container, Mapping):
        if key not in container:
            raise ExprError(f"no field {key!r}")
        return container[key]
    if isinstance(container, list | tuple | str) and isinstance(key, int):
        return container[key]
    raise ExprError(f"cannot read {key!r} of a {type(container).__name__}")


def _compile(node: ast.AST, source: str) -> Compiled:
    if isinstance(node, ast.Expression):
        return _compile(node.body, source)
    if isinstance(node, ast.Constant):
        value = node.value
        if not isinstance(value, int | float | str | bool | type(None)):
            raise ExprError(f"literal {value!r} is not allowed")
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        if name.startswith("_"):
            raise ExprError(f"name {name!r} is not allowed")
        if name in CONSTANTS:
            cval = CONSTANTS[name]
            return lambda env: cval

        def read(env: Env) -> Any:
            try:
                return env[name]
            except KeyError:
                raise ExprError(f"unknown name {name!r}") from None

        return read
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise ExprError(f"attribute {node.attr!r} is not allowed")
        base = _compile(node.value, source)
        attr = node.attr
        return lambda env: _get(base(env), attr)
    if isinstance(node, ast.Subscript):
        base = _compile(node.value, source)
        index = _compile(node.slice, source)
        return lambda env: _get(base(env), index(env))
    if isinstance(node, ast.BinOp):
        fn = _GUARDED.get(type(node.op)) or _BINOPS.get(type(node.op))
        if fn is None:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        left, right = _compile(node.left, source), _compile(node.right, source)
        return lambda env: fn(left(env), right(env))
    if isinstance(node, ast.UnaryOp):
        ufn = _UNARY.get(type(node.op))
        if ufn is None:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        operand = _compile(node.operand, source)
        return lambda env: ufn(operand(env))
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, source) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(env: Env) -> Any:
                result: Any = True
                for p in parts:
                    result = p(env)
                    if not result:
                        return result
                return result

            return all_of

        def any_of(env: Env) -> Any:
            result: Any = False
            for p in parts:
                result = p(env)
                if result:
                    return result
            return result

        return any_of
    if isinstance(node, ast.Compare):
        left = _compile(node.left, source)
        ops = []
        for cop, comparator in zip(node.ops, node.comparators, strict=True):
            cfn = _CMPOPS.get(type(cop))
            if cfn is None:
                raise ExprError(f"comparison {type(cop).__name__} is not allowed")
            ops.append((cfn, _compile(comparator, source)))

        def compare(env: Env) -> bool:
            a = left(env)
            for cfn, right in ops:
                b = right(env)
                if not cfn(a, b):
                    return False
                a = b
            return True

        return compare
    if isinstance(node, ast.IfExp):
        test, body, orelse = (_compile(n, source) for n in (node.test, node.body, node.orelse))
        return lambda env: body(env) if test(env) else orelse(env)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExprError(f"only these functions can be called: {allowed}")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed")
        func = FUNCTIONS[node.func.id]
        args = [_compile(a, source) for a in node.args]
        return lambda env: func(*(a(env) for a in args))
    if isinstance(node, ast.List | ast.Tuple):
        items = [_compile(e, source) for e in node.elts]
        return lambda env: [i(env) for i in items]
    raise ExprError(f"{type(node).__name__} is not allowed in an expression")


@lru_cache(maxsize=1024)
def compile_expr(source: str) -> Compiled:
    """Compile ``source``; raise :class:`ExprError` (a ValueError) naming the problem."""
    if len(source) > 2000:
        raise ExprError("expression is longer than 2000 characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression {source!r}: {exc.msg}") from None
    return _compile(tree, source)


def evaluate(source: str, env: Env) -> Any:
    """Compile (cached) and evaluate; errors become :class:`ExprError`."""
    fn = compile_expr(source)
    try:
        return fn(env)
    except ExprError:
        raise
    except (ArithmeticError, TypeError, ValueError, IndexError) as exc:
        raise ExprError(f"{source!r}: {exc}") from None


def names_used(source: str) -> set[str]:
    """Top-level names an expression reads (for ordering derived fields)."""
    tree = ast.parse(source.strip(), mode="eval")
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id not in CONSTANTS and n.id not in FUNCTIONS
    }
