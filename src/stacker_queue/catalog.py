"""A comparable picture of one schema's catalog (tables, columns, constraints,
indexes, triggers, policies, privileges, comments, views and functions).

``stacker-queue adopt`` reads it twice: from a scratch install of the package
(what a fresh ``migrate`` produces) and from the schema being adopted, plans
the changes from the difference, and before committing checks that nothing of
the fresh install is missing or different. Definitions are the server's own
deparsed text (``pg_get_constraintdef``, ``pg_get_indexdef``, ...) read with
``search_path = pg_catalog``, with the schema name replaced by a placeholder so
that two schemas can be compared; owners are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .templates import quote_ident, quote_literal

PLACEHOLDER = "@schema@"

# Roles whose privileges on the package's objects are part of the install.
PACKAGE_ROLES = frozenset(
    {"PUBLIC", "stacker_service", "stacker_agent", "stacker_readonly", "stacker_legacy"}
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None
    collation: str | None
    position: int
    comment: str | None


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # pg_constraint.contype: p, u, f, c, x
    definition: str  # normalised
    columns: tuple[str, ...]
    validated: bool


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # normalised, with the index name replaced
    backs_constraint: bool


@dataclass(frozen=True)
class Trigger:
    name: str
    definition: str  # normalised
    enabled: str
    comment: str | None


@dataclass(frozen=True)
class Policy:
    name: str
    permissive: bool
    command: str
    roles: tuple[str, ...]
    using: str | None
    check: str | None
    comment: str | None


@dataclass
class Table:
    name: str
    kind: str  # r (table) or v (view)
    owner: str
    row_security: bool
    force_row_security: bool
    options: tuple[str, ...]  # reloptions, in the catalog's order
    comment: str | None
    grants: frozenset[tuple[str, str]]  # (grantee, privilege), the owner left out
    view_definition: str | None = None
    columns: dict[str, Column] = field(default_factory=dict)
    constraints: dict[str, Constraint] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)


@dataclass(frozen=True)
class Function:
    signature: str  # name(identity arguments), normalised
    name: str
    definition: str  # pg_get_functiondef, normalised
    result: str
    owner: str
    grants: frozenset[tuple[str, str]]
    comment: str | None


@dataclass
class Catalog:
    schema: str
    exists: bool
    comment: str | None = None
    grants: frozenset[tuple[str, str]] = frozenset()
    tables: dict[str, Table] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)


class Normaliser:
    """Replaces one schema's name in deparsed SQL with a placeholder."""

    def __init__(self, schema: str, server_quoted: str) -> None:
        # Longest patterns first: the channel literals contain the plain one.
        self.patterns = [
            (quote_literal(f"{schema}_command_events"), f"'{PLACEHOLDER}_command_events'"),
            (quote_literal(f"{schema}_commands"), f"'{PLACEHOLDER}_commands'"),
            (quote_literal(schema), f"'{PLACEHOLDER}'"),
            (quote_ident(schema) + ".", f"{PLACEHOLDER}."),
        ]
        # The server's own qualification (deparsed SQL), unquoted when it can
        # be: only where a name starts, not inside a literal like 'stacker.actor'.
        self.qualified = re.compile(r"(?<![\w'\"$.])" + re.escape(server_quoted + "."))

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for old, new in self.patterns:
            text = text.replace(old, new)
        return self.qualified.sub(f"{PLACEHOLDER}.", text)

    def text(self, text: str) -> str:
        out = self(text)
        assert out is not None
        return out


_INDEX_NAME = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ")


def _acl_pairs(acl_column: str) -> str:
    """A select-list expression: the grants of an ``aclitem[]`` column as a JSON
    array of [grantee, privilege] pairs, grantee 0 named PUBLIC."""
    return (
        "coalesce((SELECT jsonb_agg(jsonb_build_array("
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
        f"a.privilege_type)) FROM aclexplode({acl_column}) a), '[]')"
    )


def _grants(pairs: list[Any], owner: str) -> frozenset[tuple[str, str]]:
    """The [grantee, privilege] pairs of :func:`_acl_pairs`, but the owner's."""
    return frozenset((grantee, privilege) for grantee, privilege in pairs if grantee != owner)


def read_catalog(conn: psycopg.Connection[Any], schema: str) -> Catalog:
    """Read ``schema``'s catalog. The connection's search_path should be
    ``pg_catalog`` alone, so that every deparsed name is schema-qualified."""
    row = conn.execute(
        "SELECT n.oid, obj_description(n.oid, 'pg_namespace'), quote_ident(%s), "
        f"pg_get_userbyid(n.nspowner), {_acl_pairs('n.nspacl')} "
        "FROM pg_namespace n WHERE n.nspname = %s",
        [schema, schema],
    ).fetchone()
    if row is None:
        return Catalog(schema, exists=False)
    nsp_oid, comment, server_quoted, nsp_owner, nsp_acl = row
    norm = Normaliser(schema, server_quoted)
    catalog = Catalog(schema, True, comment, _grants(nsp_acl, nsp_owner))

    for oid, name, kind, owner, rls, force, options, tcomment, view_def, acl in conn.execute(
        f"""SELECT c.oid, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity,
                  c.relforcerowsecurity, coalesce(c.reloptions, '{{}}'),
                  obj_description(c.oid, 'pg_class'),
                  CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid, true) END,
                  {_acl_pairs("c.relacl")}
             FROM pg_class c
            WHERE c.relnamespace = %s AND c.relkind IN ('r', 'p', 'v')""",
        [nsp_oid],
    ).fetchall():
        table = Table(
            name,
            "v" if kind == "v" else "r",
            owner,
            rls,
            force,
            tuple(options),
            tcomment,
            _grants(acl, owner),
            norm(view_def),
        )
        catalog.tables[name] = table
        for cname, ctype, notnull, default, collation, position, ccomment in conn.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid),
                      CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
                      a.attnum, col_description(a.attrelid, a.attnum)
                 FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 LEFT JOIN pg_collation co ON co.oid = a.attcollation
                WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped""",
            [oid],
        ).fetchall():
            table.columns[cname] = Column(
                cname, norm.text(ctype), notnull, norm(default), collation, position, ccomment
            )
        for cname, contype, definition, validated, columns in conn.execute(
            """SELECT k.conname, k.contype, pg_get_constraintdef(k.oid), k.convalidated,
                      ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                              JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                             ORDER BY u.o)
                 FROM pg_constraint k WHERE k.conrelid = %s""",
            [oid],
        ).fetchall():
            table.constraints[cname] = Constraint(
                cname, contype, norm.text(definition), tuple(columns), validated
            )
        for iname, definition, backs in conn.execute(
            """SELECT ic.relname, pg_get_indexdef(i.indexrelid),
                      EXISTS (SELECT FROM pg_constraint k
                               WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                 AND k.contype IN ('p', 'u', 'x'))
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                WHERE i.indrelid = %s""",
            [oid],
        ).fetchall():
            body = _INDEX_NAME.sub(
                lambda m: f"CREATE {m.group(1) or ''}INDEX @index@ ON ", definition
            )
            table.indexes[iname] = Index(iname, norm.text(body), backs)
        for tname, definition, enabled, tgcomment in conn.execute(
            """SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
                      obj_description(t.oid, 'pg_trigger')
                 FROM pg_trigger t WHERE t.tgrelid = %s AND NOT t.tgisinternal""",
            [oid],
        ).fetchall():
            table.triggers[tname] = Trigger(tname, norm.text(definition), enabled, tgcomment)
        for pname, permissive, command, roles, using, check, pcomment in conn.execute(
            """SELECT p.polname, p.polpermissive, p.polcmd::text,
                      ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END
                              FROM unnest(p.polroles) r ORDER BY 1),
                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
                      obj_description(p.oid, 'pg_policy')
                 FROM pg_policy p WHERE p.polrelid = %s""",
            [oid],
        ).fetchall():
            table.policies[pname] = Policy(
                pname, permissive, command, tuple(roles), norm(using), norm(check), pcomment
            )

    for name, args, definition, result, owner, fcomment, acl in conn.execute(
        f"""SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                  pg_get_functiondef(p.oid), pg_get_function_result(p.oid),
                  pg_get_userbyid(p.proowner), obj_description(p.oid, 'pg_proc'),
                  {_acl_pairs("p.proacl")}
             FROM pg_proc p WHERE p.pronamespace = %s AND p.prokind IN ('f', 'p')""",
        [nsp_oid],
    ).fetchall():
        signature = norm.text(f"{name}({args})")
        catalog.functions[signature] = Function(
            signature,
            name,
            norm.text(definition),
            norm.text(result),
            owner,
            _grants(acl, owner),
            fcomment,
        )
    return catalog


@dataclass
class Comparison:
    """How an adopted schema differs from a fresh install (the target)."""

    missing: list[str] = field(default_factory=list)  # in the target, absent or different
    extra: list[str] = field(default_factory=list)  # kept objects that are not the package's
    allowed: list[str] = field(default_factory=list)  # documented differences

    @property
    def equal(self) -> bool:
        return not self.missing


def _package_grants(grants: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    return frozenset(g for g in grants if g[0] in PACKAGE_ROLES)


def compare(target: Catalog, actual: Catalog, *, legacy_guard: bool) -> Comparison:
    """Everything of ``target`` must be in ``actual`` with the same definition.

    Allowed, and listed: column order, owners, objects ``actual`` has beyond the
    target (Stacker's own columns, constraints, indexes, triggers, functions,
    grants to other roles), and, with ``legacy_guard``, row-level security
    enabled and forced on command_queue.
    """
    out = Comparison()
    miss = out.missing.append
    # The schema's own privileges: only the package's roles (PUBLIC's USAGE on a
    # shared schema such as public is not the package's business).
    schema_want = {g for g in _package_grants(target.grants) if g[0] != "PUBLIC"}
    schema_have = {g for g in _package_grants(actual.grants) if g[0] != "PUBLIC"}
    if schema_want != schema_have:
        miss(f"privileges on the schema: {sorted(schema_have)}, want {sorted(schema_want)}")
    if target.comment != actual.comment:
        miss("comment on the schema differs")
    for name, want in target.tables.items():
        have = actual.tables.get(name)
        if have is None or have.kind != want.kind:
            miss(f"{'view' if want.kind == 'v' else 'table'} {name} is missing")
            continue
        if want.view_definition != have.view_definition:
            miss(f"view {name} has another definition")
        if want.comment != have.comment:
            miss(f"comment on {name} differs")
        if _package_grants(want.grants) != _package_grants(have.grants):
            miss(
                f"privileges on {name} differ: {sorted(_package_grants(have.grants))} "
                f"instead of {sorted(_package_grants(want.grants))}"
            )
        extra_grants = sorted(have.grants - want.grants - _package_grants(have.grants))
        if extra_grants:
            out.extra.append(f"privileges on {name}: {extra_grants}")
        if not set(want.options) <= set(have.options):
            miss(f"storage options of {name}: {sorted(have.options)}, want {sorted(want.options)}")
        rls = (have.row_security, have.force_row_security)
        if rls != (want.row_security, want.force_row_security):
            if legacy_guard and name == "command_queue" and rls == (True, True):
                out.allowed.append("row-level security enabled and forced on command_queue")
            else:
                miss(f"row-level security of {name} is {rls}")
        order_want = [c for c in sorted(want.columns.values(), key=lambda c: c.position)]
        order_have = [
            c.name
            for c in sorted(have.columns.values(), key=lambda c: c.position)
            if c.name in want.columns
        ]
        if [c.name for c in order_want] != order_have:
            out.allowed.append(f"column order of {name}: {', '.join(order_have)}")
        for cname, col in want.columns.items():
            got = have.columns.get(cname)
            if got is None:
                miss(f"column {name}.{cname} is missing")
            elif (got.type, got.not_null, got.default, got.collation, got.comment) != (
                col.type,
                col.not_null,
                col.default,
                col.collation,
                col.comment,
            ):
                miss(
                    f"column {name}.{cname} is {got.type} not_null={got.not_null} "
                    f"default={got.default}, want {col.type} not_null={col.not_null} "
                    f"default={col.default}"
                    + (" (comment differs)" if got.comment != col.comment else "")
                )
        out.extra += [f"column {name}.{c}" for c in have.columns if c not in want.columns]
        for kind, wants, haves in (
            ("constraint", want.constraints, have.constraints),
            ("index", want.indexes, have.indexes),
            ("trigger", want.triggers, have.triggers),
            ("policy", want.policies, have.policies),
        ):
            for oname, obj in wants.items():
                if haves.get(oname) != obj:
                    miss(f"{kind} {oname} on {name} is missing or different")
            out.extra += [f"{kind} {o} on {name}" for o in haves if o not in wants]
    for signature, fn in target.functions.items():
        got_fn = actual.functions.get(signature)
        if got_fn is None:
            miss(f"function {signature} is missing")
            continue
        if (got_fn.definition, got_fn.comment) != (fn.definition, fn.comment):
            miss(f"function {signature} has another definition or comment")
        if _package_grants(got_fn.grants) != _package_grants(fn.grants):
            miss(f"privileges on function {signature} differ")
        extra_grants = sorted(got_fn.grants - _package_grants(got_fn.grants))
        if extra_grants:
            out.extra.append(f"privileges on function {signature}: {extra_grants}")
    return out
