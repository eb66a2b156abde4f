"""Loading a YAML file into a pydantic model, with errors that name the line and the field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from store.contract import reason_of

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Fault:
    """One problem in a configuration file."""

    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.field or '(file)'}: {self.reason}"


class ConfigError(ValueError):
    """A configuration file that cannot be used; every fault is listed."""

    def __init__(self, path: Path, faults: Sequence[Fault]) -> None:
        self.path = path
        self.faults = list(faults)
        super().__init__("\n".join(f"{path}: {f}" for f in self.faults))


def load_yaml(path: Path, model: type[M]) -> M:
    """Parse and validate `path` as `model`; ConfigError names each bad line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [Fault(None, "", f"cannot read: {exc}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [Fault(line, "", f"not valid YAML: {reason}")]) from None
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        faults = [
            Fault(_line_of(root, err["loc"]), _dotted(err["loc"]), reason_of(err))
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(path, faults) from None


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest node the error location reaches."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break  # a missing field: the line of the mapping that lacks it
        node, line = child, child.start_mark.line + 1
    return line
