"""Locate and render the package's SQL templates.

Every SQL file (migrations, functions, repeatable objects) is a jinja2 template
rendered with ``StrictUndefined``; the only inputs are derived from the schema
name, which is quoted as an identifier wherever it appears in SQL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

DEFAULT_SCHEMA = "stacker"

# NOTIFY channels are identifiers of at most 63 bytes; the longest we derive is
# "<schema>_command_events", so the schema name is capped to leave room.
MAX_SCHEMA_BYTES = 63 - len("_command_events")


def sql_root() -> Path:
    """The folder holding ``migrations/``, ``functions/`` and ``sql/``.

    An installed wheel carries them in ``stacker_queue/_sql``; a source checkout
    (editable install) has them at the top of the repository.
    """
    packaged = Path(__file__).resolve().parent / "_sql"
    if (packaged / "migrations").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "migrations").is_dir():
        return checkout
    raise FileNotFoundError(
        "stacker-queue cannot find its SQL folders (migrations/, functions/, sql/): "
        f"looked in {packaged} and {checkout}"
    )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's quote_ident would, always."""
    if "\x00" in name:
        raise ValueError("identifiers cannot contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (standard_conforming_strings on)."""
    if "\x00" in value:
        raise ValueError("string literals cannot contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def validate_schema_name(schema: str) -> str:
    if not schema:
        raise ValueError("the schema name cannot be empty")
    if "\x00" in schema:
        raise ValueError("the schema name cannot contain NUL characters")
    if len(schema.encode()) > MAX_SCHEMA_BYTES:
        raise ValueError(
            f"the schema name {schema!r} is longer than {MAX_SCHEMA_BYTES} bytes; "
            "its NOTIFY channel names would not fit in an identifier"
        )
    if schema.startswith("pg_"):
        raise ValueError(f"the schema name {schema!r} is reserved (pg_ prefix)")
    return schema


@dataclass(frozen=True)
class Template:
    """One SQL template file, rendered for a schema."""

    kind: str  # "migration", "rollback", "function" or "sql"
    name: str  # file name without the .sql suffix
    path: Path
    text: str  # rendered SQL

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


class Renderer:
    """Renders the package's SQL for one schema name."""

    def __init__(self, schema: str = DEFAULT_SCHEMA, root: Path | None = None) -> None:
        self.schema = validate_schema_name(schema)
        self.root = root or sql_root()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.root)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        self.env.filters["ident"] = quote_ident
        self.env.filters["literal"] = quote_literal

    @property
    def context(self) -> dict[str, str]:
        return {
            "schema": quote_ident(self.schema),
            "schema_name": self.schema,
            "schema_literal": quote_literal(self.schema),
            "channel_commands": quote_literal(f"{self.schema}_commands"),
            "channel_events": quote_literal(f"{self.schema}_command_events"),
            # The package's own functions (one per functions/ file, named like
            # it), as an SQL text[]: sql/800_grants.sql resets privileges on
            # these alone, since the schema may be shared (Stacker's public).
            "function_names": "ARRAY["
            + ", ".join(quote_literal(p.stem) for p in self._files("functions"))
            + "]::text[]",
        }

    def macro(self, name: str, *args: str) -> str:
        """One macro of sql/_macros.sql, rendered for this schema, for SQL that
        Python assembles (adopt) so that it shares the templates' definitions."""
        module = self.env.get_template("sql/_macros.sql").make_module(self.context)
        return str(getattr(module, name)(*args))

    def render_path(self, relative: str) -> str:
        return self.env.get_template(relative).render(**self.context)

    def _files(self, folder: str) -> list[Path]:
        return sorted((self.root / folder).glob("*.sql"))

    def migrations(self) -> list[tuple[Template, Template]]:
        """(up, rollback) pairs in version order."""
        pairs = []
        for path in self._files("migrations"):
            if path.name.endswith(".rollback.sql"):
                continue
            name = path.name.removesuffix(".sql")
            rollback_path = path.with_name(f"{name}.rollback.sql")
            if not rollback_path.exists():
                raise FileNotFoundError(f"migration {name} has no rollback ({rollback_path.name})")
            up = Template("migration", name, path, self.render_path(f"migrations/{path.name}"))
            down = Template(
                "rollback",
                name,
                rollback_path,
                self.render_path(f"migrations/{rollback_path.name}"),
            )
            pairs.append((up, down))
        return pairs

    def functions(self) -> list[Template]:
        return [
            Template("function", p.stem, p, self.render_path(f"functions/{p.name}"))
            for p in self._files("functions")
        ]

    def repeatable_sql(self) -> list[Template]:
        """The other repeatable objects, in file-name order (``_`` files are macros)."""
        return [
            Template("sql", p.stem, p, self.render_path(f"sql/{p.name}"))
            for p in self._files("sql")
            if not p.name.startswith("_")
        ]

    def repeatables(self) -> list[Template]:
        return self.functions() + self.repeatable_sql()

    def full_install(self) -> str:
        """The SQL of a complete install, in the order ``migrate`` applies it."""
        parts = [
            "-- stacker-queue install for schema " + self.schema,
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)};",
        ]
        for up, _ in self.migrations():
            parts.append(f"\n-- migration {up.name}\n{up.text.strip()}")
        for t in self.repeatables():
            parts.append(f"\n-- {t.kind} {t.name} (sha256 {t.sha256[:12]})\n{t.text.strip()}")
        return "\n".join(parts) + "\n"


_FUNCTION_NAME = re.compile(
    r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+(?:\"(?:[^\"]|\"\")+\"|\w+)\.(\w+)\s*\(", re.IGNORECASE
)


def function_name(template: Template) -> str | None:
    """The name of the function a function file defines (None for other files)."""
    match = _FUNCTION_NAME.search(template.text)
    return match.group(1) if match else None


@cache
def default_renderer() -> Renderer:
    return Renderer()
