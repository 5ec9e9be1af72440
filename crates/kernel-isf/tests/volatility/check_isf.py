"""Loads an ISF the way stock Volatility 3 does and reports what Volatility sees, as JSON on stdout.

Usage: python check_isf.py ISF_PATH < request.json

request: {"types": [name, ...], "members": [[type, member], ...], "symbols": [name, ...]}

The report holds:
- schema_errors: for each Volatility schema named in `schemas` (default: 6.3.0), jsonschema errors
  of the document (empty when valid);
- volatility_validate: the result of volatility3.schemas.validate (what the loader runs);
- load_error: null, or why LinuxKernelIntermedSymbols (the class the Linux automagic builds) refused it;
- types / members / symbols: sizes, offsets and type names as Volatility's templates give them;
- identifier: base64 of what Volatility's banner cache would file the ISF under.

Part of the kernel-isf crate's tests; it uses Volatility's public API and contains none of its code.
"""

import base64
import json
import lzma
import os
import pathlib
import sys


def open_isf(path):
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def describe(ctx, template):
    """Type name, size and (for arrays and pointers) the element of a Volatility template."""
    vol = template.vol
    out = {"type_name": vol.get("type_name")}
    if "count" in vol:
        out["count"] = vol.count
    if "subtype" in vol and vol.subtype is not None:
        out["subtype"] = vol.subtype.vol.get("type_name")
    try:
        out["size"] = template.size
    except Exception:
        try:
            out["size"] = ctx.symbol_space.get_type(out["type_name"]).size
        except Exception as exc:  # unresolved reference
            out["size_error"] = str(exc)
    return out


def main():
    path = sys.argv[1]
    request = json.load(sys.stdin)
    report = {}

    with open_isf(path) as f:
        doc = json.load(f)

    import jsonschema
    from volatility3 import schemas

    schema_dir = os.path.dirname(schemas.__file__)
    # The file's own format is what Volatility's loader validates against (volatility_validate
    # below); 6.3.0 is the newest, stricter schema it ships. Each validation of a full kernel ISF
    # takes tens of seconds, so only 6.3.0 is run here for error messages.
    wanted = request.get("schemas", ["6.3.0"])
    report["schema_errors"] = {}
    for version in wanted:
        with open(os.path.join(schema_dir, f"schema-{version}.json"), encoding="utf-8") as s:
            schema = json.load(s)
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
        errors = []
        for e in validator_class(schema).iter_errors(doc):
            errors.append(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}")
            if len(errors) >= 10:
                break
        report["schema_errors"][version] = errors
    try:
        report["volatility_validate"] = bool(schemas.validate(doc, use_cache=False))
    except Exception as exc:
        report["volatility_validate"] = False
        report["volatility_validate_error"] = str(exc)[:500]

    from volatility3.framework import contexts
    from volatility3.framework.automagic import symbol_cache
    from volatility3.framework.symbols import linux
    # The Linux symbol class refers to extensions.network, which the CLI imports with the plugins.
    import volatility3.framework.symbols.linux.extensions.network  # noqa: F401

    identifier = symbol_cache.LinuxIdentifier.get_identifier(doc)
    report["identifier"] = base64.b64encode(identifier).decode() if identifier is not None else None

    ctx = contexts.Context()
    try:
        table = linux.LinuxKernelIntermedSymbols(
            ctx, "temporary.isf", name="isf", isf_url=pathlib.Path(path).resolve().as_uri()
        )
        ctx.symbol_space.append(table)
        report["load_error"] = None
    except Exception as exc:
        report["load_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        print(json.dumps(report, indent=1, sort_keys=True))
        return

    report["natives"] = {n: table.natives.get_type(n).size for n in ("pointer", "long unsigned int", "int", "char")}
    report["types"] = {}
    for name in request.get("types", []):
        try:
            t = table.get_type(name)
            report["types"][name] = {"size": t.size, "members": sorted(t.vol.members)}
        except Exception as exc:
            report["types"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    report["members"] = {}
    for type_name, member in request.get("members", []):
        key = f"{type_name}.{member}"
        try:
            t = table.get_type(type_name)
            offset, child = t.vol.members[member]
            entry = describe(ctx, child)
            entry["offset"] = offset
            report["members"][key] = entry
        except Exception as exc:
            report["members"][key] = {"error": f"{type(exc).__name__}: {exc}"}
    report["symbols"] = {}
    for name in request.get("symbols", []):
        try:
            sym = table.get_symbol(name)
            entry = {"address": sym.address, "type": None}
            if sym.type is not None:
                entry["type"] = describe(ctx, sym.type)
            report["symbols"][name] = entry
        except Exception as exc:
            report["symbols"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
