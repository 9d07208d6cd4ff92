"""Jinja2 rendering with strict undefined variables, and playbook vars resolved in dependency order."""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment


@functools.cache
def _env() -> SandboxedEnvironment:
    """Sandboxed: a playbook is data, so templates must not reach Python internals. Made (and
    Jinja2 imported) on first use: a ship without templates never pays for it."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class TemplateProblem(Exception):
    """A template could not be rendered; `missing` names the undefined variables when known."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def syntax_error(text: str) -> str | None:
    """None when `text` is a valid template (or plain text), else the parser's complaint."""
    if not is_template(text):
        return None
    import jinja2

    try:
        _env().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or str(exc)
    return None


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a YAML value (scalars, lists, mappings)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def names_used(value: Any) -> set[str]:
    names: set[str] = set()
    for text in strings_in(value):
        if is_template(text):
            from jinja2 import meta

            names |= meta.find_undeclared_variables(_env().parse(text))
    return names


def render(text: str, context: Mapping[str, Any], failed: Mapping[str, TemplateProblem] | None = None) -> str:
    """Render one string; TemplateProblem names the undefined variable (or the var that failed)."""
    if not is_template(text):
        return text
    import jinja2

    try:
        return _env().from_string(text).render(dict(context))
    except jinja2.UndefinedError as exc:
        missing = tuple(sorted(n for n in names_used(text) if n not in context))
        for name in missing:
            if failed and name in failed:
                raise TemplateProblem(f"variable '{name}' (vars.{name}) could not be rendered: {failed[name]}",
                                      failed[name].missing) from exc
        if missing:
            quoted = ", ".join(f"'{n}'" for n in missing)
            raise TemplateProblem(f"undefined variable {quoted}", missing) from exc
        raise TemplateProblem(str(exc.message or exc)) from exc
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {exc.message or exc}") from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateProblem(f"template error: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any], failed: Mapping[str, TemplateProblem] | None = None) -> Any:
    """Render every string inside a structured value."""
    if isinstance(value, str):
        return render(value, context, failed)
    if isinstance(value, Mapping):
        return {k: render_value(v, context, failed) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context, failed) for v in value]
    return value


def resolve_vars(
    playbook_vars: Mapping[str, Any], base: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, TemplateProblem]]:
    """Context for rendering: `base` (host vars) wins over playbook vars, which may use each other.

    Returns the context and the playbook vars that failed to render (reported only when used).
    """
    context = dict(base)
    pending = {k: v for k, v in playbook_vars.items() if k not in base}
    failed: dict[str, TemplateProblem] = {}
    for name in _order(pending):
        try:
            context[name] = render_value(pending[name], context, failed)
        except TemplateProblem as exc:
            failed[name] = exc
    return context, failed


def _order(pending: Mapping[str, Any]) -> list[str]:
    """Names in dependency order; a cycle is a TemplateProblem naming it."""
    deps = {name: names_used(value) & set(pending) - {name} for name, value in pending.items()}
    for name, value in pending.items():
        if name in names_used(value):
            raise TemplateProblem(f"variable '{name}' refers to itself")
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise TemplateProblem("variables refer to each other in a cycle: " + " -> ".join(cycle))
        state[name] = 1
        for dep in sorted(deps[name]):
            visit(dep, trail + [name])
        state[name] = 2
        order.append(name)

    for name in pending:
        visit(name, [])
    return order


def render_static(text: str, playbook_vars: Mapping[str, Any]) -> str:
    """Render a value that is the same for every host: only the playbook's own vars are defined."""
    if not is_template(text):
        return text
    context, failed = resolve_vars(playbook_vars, {})
    return render(text, context, failed)
