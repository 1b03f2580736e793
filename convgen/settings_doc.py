"""The README's configuration table, generated from the Settings fields (a test keeps the README in sync)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from convgen.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "hostname-pid" if name == "instance_name" else "(computed)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value}`"


def _names(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return " / ".join(f"`{str(choice).upper()}`" for choice in alias.choices)
    return f"`{name.upper()}`"


def settings_table() -> str:
    """A markdown table: variable, default, meaning."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| {_names(name, field)} | {_default(name, field)} | {description} |")
    return "\n".join(lines)


def render_into(readme: str) -> str:
    """The README text with the table between its markers replaced by a fresh one."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + settings_table() + "\n" + readme[end:]


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render_into(path.read_text()))
    print(f"updated the configuration table in {path}")
