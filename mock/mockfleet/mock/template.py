"""Payload templates: compiled once per lot, instantiated per device, rendered per sample.

A template is any JSON value in which objects with a ``$gen`` key are
generators. :func:`compile_template` turns it into an immutable tree (built in
the preloaded parent and shared copy-on-write by forked devices); every
generator node gets a stable *node id* (``payload.temperature``,
``payload.pos[0]``) that names its random stream and its per-device state.

States override parts of the lot's template. Nodes a state does not override
keep the base template's node id, so a device that changes state keeps the
very same generator object for them (a sequence or random walk continues
where it was); nodes a state introduces are named
``states.<state>.payload.<path>``.

Expression nodes are evaluated after all other nodes of a sample, in
dependency order, with the top-level fields rendered so far as names.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mockfleet.mock.generators.base import Context, Generator
from mockfleet.mock.generators.build import (
    EXPR_NAMES,
    build_generator,
    expr_env,
    parse_spec,
    round_value,
)
from mockfleet.mock.generators.syntax import GEN_KEY, ExprError, check_format_template
from mockfleet.mock.plain import Spec
from mockfleet.mock.seeding import device_seed

if TYPE_CHECKING:
    from mockfleet.mock.lot import MockLot

# Compiled node kinds. A node is a tuple whose first item is its kind:
#   (_LIT, value)                 a literal subtree, reused as is
#   (_GEN, slot)                  a generator: slot into the instance's generator list
#   (_EXPR, rank, key)            an expression: filled in after the rest, in rank order
#   (_DICT, ((key, node), ...))   an object with at least one generator inside
#   (_LIST, (node, ...))          an array with at least one generator inside
_LIT, _GEN, _EXPR, _DICT, _LIST = range(5)

_ROOT_KEY = "\x00root"  # where a template that is itself an expression is parked


class _ExprNode:
    """What the compiler knows about one expression node (shared, immutable)."""

    __slots__ = ("fn", "key", "node_id", "round", "source", "top_level")

    def __init__(
        self, node_id: str, key: Any, source: str, ndigits: int | None, top_level: bool
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.source = source
        from mockfleet.mock.generators.expr import compile_expr  # imports ast: only when used

        self.fn = compile_expr(source)
        self.round = ndigits
        self.top_level = top_level


class CompiledTemplate:
    """A template compiled once per lot (and state); immutable, shared by devices."""

    __slots__ = ("exprs", "gen_ids", "gen_specs", "root", "source")

    def __init__(
        self,
        source: Any,
        root: tuple[Any, ...],
        gen_ids: tuple[str, ...],
        gen_specs: tuple[Any, ...],
        exprs: tuple[_ExprNode, ...],
    ) -> None:
        self.source = source
        self.root = root
        self.gen_ids = gen_ids
        self.gen_specs = gen_specs
        #: expression nodes in evaluation order (index = rank)
        self.exprs = exprs

    @property
    def node_ids(self) -> tuple[str, ...]:
        """Ids of every generator node (expressions included)."""
        return self.gen_ids + tuple(e.node_id for e in self.exprs)

    def instantiate(self, device_seed: int, generators: dict[str, Generator]) -> TemplateInstance:
        """A renderer for one device. ``generators`` (node id -> generator) belongs to
        the device and is shared by all its states, so common nodes keep their state."""
        return TemplateInstance(self, device_seed, generators)


class TemplateInstance:
    """One device's view of a compiled template; generators are built on first render."""

    __slots__ = ("_gens", "_targets", "compiled", "generators", "last_error", "seed")

    def __init__(
        self, compiled: CompiledTemplate, seed: int, generators: dict[str, Generator]
    ) -> None:
        self.compiled = compiled
        self.seed = seed
        self.generators = generators
        self._gens: list[Generator] | None = None
        self._targets: list[Any] = [None] * len(compiled.exprs)
        #: the last error of the last render ("<node id>: <message>"), or None
        self.last_error: str | None = None

    def _resolve(self) -> list[Generator]:
        gens = []
        shared = self.generators
        for node_id, spec in zip(self.compiled.gen_ids, self.compiled.gen_specs, strict=True):
            gen = shared.get(node_id)
            if gen is None:
                gen = build_generator(spec, self.seed, node_id)
                shared[node_id] = gen
            gens.append(gen)
        self._gens = gens
        return gens

    def render(self, ctx: Context) -> Any:
        """A fresh JSON value for this sample. Errors (bad expressions, missing
        variables) render as None and are reported in :attr:`last_error`."""
        gens = self._gens if self._gens is not None else self._resolve()
        self.last_error = None
        root = self.compiled.root
        kind = root[0]
        if kind == _DICT:
            out: dict[Any, Any] = {}
            ctx.fields = out
            self._fill_dict(root[1], out, gens, ctx)
            result: Any = out
        else:
            ctx.fields = {}
            if kind == _EXPR:
                holder: dict[Any, Any] = {}
                self._targets[root[1]] = holder
                self._run_exprs(ctx)
                return holder[_ROOT_KEY]
            result = self._render(root, gens, ctx)
        if self._targets:
            self._run_exprs(ctx)
        return result

    def _fill_dict(
        self,
        items: tuple[tuple[Any, Any], ...],
        out: dict[Any, Any],
        gens: list[Generator],
        ctx: Context,
    ) -> None:
        for key, node in items:
            kind = node[0]
            if kind == _GEN:
                try:
                    out[key] = gens[node[1]](ctx)
                except Exception as exc:  # a bad sample must not kill the device
                    out[key] = None
                    self._fail(self.compiled.gen_ids[node[1]], exc)
            elif kind == _LIT:
                out[key] = node[1]
            elif kind == _EXPR:
                out[key] = None  # placeholder keeps the template's key order
                self._targets[node[1]] = out
            else:
                out[key] = self._render(node, gens, ctx)

    def _render(self, node: tuple[Any, ...], gens: list[Generator], ctx: Context) -> Any:
        kind = node[0]
        if kind == _LIT:
            return node[1]
        if kind == _GEN:
            try:
                return gens[node[1]](ctx)
            except Exception as exc:
                self._fail(self.compiled.gen_ids[node[1]], exc)
                return None
        if kind == _DICT:
            out: dict[Any, Any] = {}
            self._fill_dict(node[1], out, gens, ctx)
            return out
        # _LIST (expressions inside lists are registered by their index)
        items: list[Any] = []
        for child in node[1]:
            if child[0] == _EXPR:
                items.append(None)
                self._targets[child[1]] = items
            else:
                items.append(self._render(child, gens, ctx))
        return items

    def _run_exprs(self, ctx: Context) -> None:
        env = expr_env(ctx)
        targets = self._targets
        for rank, ex in enumerate(self.compiled.exprs):
            container = targets[rank]
            targets[rank] = None  # do not keep last sample's containers alive
            try:
                value = ex.fn(env)
                if ex.round is not None:
                    value = round_value(value, ex.round)
            except Exception as exc:  # bad data in a user's expression: count, go on
                value = None
                self._fail(ex.node_id, exc)
            if container is not None:
                container[ex.key] = value
            if ex.top_level:
                env[ex.key] = value

    def _fail(self, node_id: str, exc: Exception) -> None:
        msg = (
            str(exc) if isinstance(exc, ExprError | ValueError) else f"{type(exc).__name__}: {exc}"
        )
        self.last_error = f"{node_id}: {msg}"


# --------------------------------------------------------------------------- compiling


class _Compiler:
    """Collects generator and expression nodes while walking a template.

    ``depth`` is 0 for the template itself and 1 for the fields of a top-level
    object: only those are names that expressions can read.
    """

    def __init__(self) -> None:
        self.gen_ids: list[str] = []
        self.gen_specs: list[Any] = []
        self.exprs: list[_ExprNode] = []

    def node(self, value: Any, node_id: str, key: Any, depth: int) -> tuple[Any, ...]:
        if isinstance(value, Spec):  # a generator parsed by the validator
            return self.gen(value, node_id, key, depth)
        if isinstance(value, dict):
            if GEN_KEY in value:
                return self.gen(value, node_id, key, depth)
            items = tuple(
                (k, self.node(v, f"{node_id}.{k}", k, depth + 1)) for k, v in value.items()
            )
            return self.container(_DICT, items, value)
        if isinstance(value, list):
            children = tuple(
                self.node(v, f"{node_id}[{i}]", i, depth + 1) for i, v in enumerate(value)
            )
            return self.container(_LIST, children, value)
        return (_LIT, value)

    def merged(
        self, base: Any, over: Any, base_id: str, over_id: str, key: Any, depth: int
    ) -> tuple[Any, ...]:
        """Compile ``over`` deep-merged onto ``base``; base-only nodes keep base ids."""
        if not (_is_plain_dict(base) and _is_plain_dict(over)):
            return self.node(over, over_id, key, depth)
        items = []
        for k, v in base.items():
            if k in over:
                node = self.merged(v, over[k], f"{base_id}.{k}", f"{over_id}.{k}", k, depth + 1)
            else:
                node = self.node(v, f"{base_id}.{k}", k, depth + 1)
            items.append((k, node))
        for k, v in over.items():
            if k not in base:
                items.append((k, self.node(v, f"{over_id}.{k}", k, depth + 1)))
        return self.container(_DICT, tuple(items), merge_override(base, over))

    def container(self, kind: int, children: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
        nodes = [c[1] for c in children] if kind == _DICT else list(children)
        if all(n[0] == _LIT for n in nodes):
            return (_LIT, value)  # nothing generated inside: reuse the literal subtree
        return (kind, children)

    def gen(self, value: Any, node_id: str, key: Any, depth: int) -> tuple[Any, ...]:
        try:
            spec = parse_spec(value)
        except ValueError as exc:
            raise ValueError(f"{node_id}: {exc}") from None
        if spec.gen == "expr":
            self.exprs.append(_ExprNode(node_id, key, spec.expr, spec.round, depth == 1))
            return (_EXPR, len(self.exprs) - 1, key)
        self.gen_ids.append(node_id)
        self.gen_specs.append(spec)
        return (_GEN, len(self.gen_ids) - 1)


def _is_plain_dict(value: Any) -> bool:
    return isinstance(value, dict) and GEN_KEY not in value


def _finish(source: Any, root: tuple[Any, ...], comp: _Compiler) -> CompiledTemplate:
    exprs = _order_exprs(comp.exprs)
    rank_of = {id(e): r for r, e in enumerate(exprs)}
    old_to_new = {i: rank_of[id(e)] for i, e in enumerate(comp.exprs)}
    root = _renumber(root, old_to_new)
    return CompiledTemplate(source, root, tuple(comp.gen_ids), tuple(comp.gen_specs), exprs)


def _renumber(node: tuple[Any, ...], ranks: dict[int, int]) -> tuple[Any, ...]:
    kind = node[0]
    if kind == _EXPR:
        return (_EXPR, ranks[node[1]], node[2])
    if kind == _DICT:
        return (_DICT, tuple((k, _renumber(c, ranks)) for k, c in node[1]))
    if kind == _LIST:
        return (_LIST, tuple(_renumber(c, ranks) for c in node[1]))
    return node


def _order_exprs(exprs: list[_ExprNode]) -> tuple[_ExprNode, ...]:
    """Top-level expressions in dependency order, then nested ones (which nothing
    can reference by name). A cycle is a ValueError naming its fields."""
    if not exprs:
        return ()
    from mockfleet.mock.generators.expr import names_used  # imports ast: only when used

    top = {e.key: e for e in exprs if e.top_level}
    deps = {k: sorted(names_used(e.source) & top.keys()) for k, e in top.items()}
    order: list[_ExprNode] = []
    state: dict[Any, int] = {}  # 1 = visiting, 2 = done

    def visit(k: Any, path: list[Any]) -> None:
        if state.get(k) == 2:
            return
        if state.get(k) == 1:
            cycle = [*path[path.index(k) :], k]
            raise ValueError(
                "expression fields depend on each other in a cycle: "
                + " -> ".join(str(c) for c in cycle)
            )
        state[k] = 1
        for d in deps[k]:
            visit(d, [*path, k])
        state[k] = 2
        order.append(top[k])

    for k in top:
        visit(k, [])
    order.extend(e for e in exprs if not e.top_level)
    return tuple(order)


def compile_template(template: Any, base_id: str = "payload") -> CompiledTemplate:
    """Compile a JSON template; ValueError for invalid generators or expression cycles."""
    comp = _Compiler()
    root = comp.node(template, base_id, None, 0)
    if root[0] == _EXPR:
        comp.exprs[0].key = _ROOT_KEY
        root = (_EXPR, 0, _ROOT_KEY)
    return _finish(template, root, comp)


def compile_override(
    base: Any, override: Any, base_id: str = "payload", override_id: str = "override"
) -> CompiledTemplate:
    """Compile ``base`` deep-merged with ``override`` (see :func:`merge_override`);
    nodes taken from ``base`` keep ``base_id`` ids, the override's get ``override_id``."""
    if override is None:
        return compile_template(base, base_id)
    comp = _Compiler()
    root = comp.merged(base, override, base_id, override_id, None, 0)
    if root[0] == _EXPR:
        comp.exprs[0].key = _ROOT_KEY
        root = (_EXPR, 0, _ROOT_KEY)
    return _finish(merge_override(base, override), root, comp)


def merge_override(base: Any, override: Any) -> Any:
    """Deep merge: objects merge key by key; a generator or any non-object replaces."""
    if _is_plain_dict(base) and _is_plain_dict(override):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge_override(base[k], v) if k in base else v
        return out
    return override


def compile_states(lot: MockLot) -> dict[str, CompiledTemplate]:
    """One compiled template per state, plus ``""`` for the lot's own template.

    Checks that ``var``/``format`` nodes name known constants/variables and that
    expressions only use known names. States without a payload share the base.
    """
    template = lot.spec.payload.template
    base = compile_template(template, "payload")
    out = {"": base}
    for name, state in lot.spec.states.items():
        if state.payload is None:
            out[name] = base
        else:
            try:
                out[name] = compile_override(
                    template, state.payload, "payload", f"states.{name}.payload"
                )
            except ValueError as exc:
                raise ValueError(f"states.{name}: {exc}") from None
    known = set(lot.spec.constants) | set(lot.spec.variables)
    for compiled in {id(c): c for c in out.values()}.values():
        check_names(compiled, known)
    return out


def check_names(compiled: CompiledTemplate, variables: set[str]) -> None:
    """ValueError naming the node when a var, format or expression uses an unknown name."""
    device_names = {"id", "index", "lot", "seq", "state"}
    for node_id, spec in zip(compiled.gen_ids, compiled.gen_specs, strict=True):
        if spec.gen == "var" and spec.name not in variables:
            raise ValueError(
                f"{node_id}: unknown variable {spec.name!r}; known: "
                + (", ".join(sorted(variables)) or "none (define constants or variables)")
            )
        if spec.gen == "format":
            for used in check_format_template(spec.template):
                if used not in variables | device_names:
                    raise ValueError(
                        f"{node_id}: template uses unknown name {{{used}}}; available: "
                        + ", ".join(sorted(variables | device_names))
                    )
    fields = _top_level_keys(compiled.source)
    available = variables | fields | set(EXPR_NAMES)
    for ex in compiled.exprs:
        from mockfleet.mock.generators.expr import names_used

        unknown = names_used(ex.source) - available
        if unknown:
            raise ValueError(
                f"{ex.node_id}: expression uses unknown name(s) {', '.join(sorted(unknown))}; "
                "available: " + ", ".join(sorted(str(a) for a in available))
            )


def _top_level_keys(source: Any) -> set[str]:
    return {str(k) for k in source} if _is_plain_dict(source) else set()


# --------------------------------------------------------------------------- variables


def render_variables(
    lot: MockLot, seed: int, index: int, device_id: str, now: float | None = None
) -> dict[str, Any]:
    """The device's constants and variables, each variable evaluated once.

    ``seed`` is the device seed (``device_seed(lot.spec.seed, index)``). Each
    variable is compiled with node ids ``variables.<name>`` so its values do not
    depend on the other variables; later variables can use earlier ones.
    """
    values: dict[str, Any] = dict(lot.spec.constants)
    ctx = Context(
        device_id=device_id,
        index=index,
        lot=lot.name,
        vars=values,
        now=time.time() if now is None else now,
    )
    shared: dict[str, Generator] = {}
    for name, value in lot.spec.variables.items():
        compiled = compile_template(value, f"variables.{name}")
        instance = compiled.instantiate(seed, shared)
        rendered = instance.render(ctx)
        if instance.last_error is not None:
            raise ValueError(f"variables.{name}: {instance.last_error}")
        values[name] = rendered
    return values


def lot_device_seed(lot: MockLot, index: int) -> int:
    """The seed of device ``index`` of ``lot``."""
    return device_seed(lot.spec.seed, index)


__all__ = [
    "CompiledTemplate",
    "TemplateInstance",
    "check_names",
    "compile_override",
    "compile_states",
    "compile_template",
    "lot_device_seed",
    "merge_override",
    "render_variables",
]
