#!/usr/bin/env python3
"""sluice's module dependency graph, read from the sources.

Nodes are the top-level modules under src/: a file src/X.rs or a directory
src/X/ (plus the crate roots main.rs and lib.rs). Module A depends on B
(A != B) when a file of A names `crate::B` (`use crate::B::...`, grouped
`use crate::{B, C::d}`, or an inline path such as `crate::metrics::Route`),
or a `super::` path that climbs to the crate root and names B. main.rs, a
binary crate, names the library as `sluice::B`. Comments, string literals
and items under `#[cfg(test)]` (test modules, test-only helpers) are not
read.

Usage:
  scripts/modgraph.py                 cycle check: every strongly connected
                                      component of more than one module, with
                                      its cycles and one file:line per edge;
                                      exit 1 if there is one
  scripts/modgraph.py --forbid server report every module but the roots
                                      (main, lib, demo) that imports server;
                                      exit 1 if one does (repeatable; runs
                                      with the cycle check)
  scripts/modgraph.py --print         the graph, one `module -> deps` a line
  scripts/modgraph.py --self-test     checks this script on a synthetic tree

main, lib and demo are roots: they may import anything, and are left out of
the cycle check.

Python 3 standard library only.
"""

import argparse
import os
import re
import sys
import tempfile
from bisect import bisect_right
from collections import defaultdict

ROOTS = ("main", "lib", "demo")
# Simple cycles searched for per strongly connected component, at most.
CYCLE_SEARCH_LIMIT = 10000

# --------------------------------------------------------------------------
# Reading Rust text


def _blank(text):
    """The text with every character but newlines replaced by a space, so
    that offsets and line numbers stay where they were."""
    return re.sub(r"[^\n]", " ", text)


_CHAR = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|.)|[^'\\\n])'")
_RAW_STRING = re.compile(r'b?r(#*)"')


def strip_comments_and_strings(text):
    """Comments, string and char literals blanked; everything else kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(_blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 0, i
            while j < n:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            out.append(_blank(text[i:j]))
            i = j
        elif c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) and (
            m := _RAW_STRING.match(text, i)
        ):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(_blank(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(_blank(text[i:j]))
            i = j
        elif c == "'" and (m := _CHAR.match(text, i)):
            out.append(_blank(m.group(0)))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


_CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
_ATTRIBUTE = re.compile(r"\s*#\s*\[")
_FILE_MOD = re.compile(r"\s*(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


def _closing(text, j, opener, closer):
    """`j` at `opener`: the offset of its matching `closer`, or the text's
    length when it has none."""
    depth = 0
    while j < len(text):
        if text[j] == opener:
            depth += 1
        elif text[j] == closer:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return len(text)


def _skip_attribute(text, i):
    """`i` at `#`: the offset after the attribute's closing `]`."""
    return min(_closing(text, text.index("[", i), "[", "]") + 1, len(text))


def _item_end(text, i):
    """The end of the item starting at `i`: its first `;` outside brackets,
    or the end of its first `{...}` block."""
    depth = 0
    j = i
    while j < len(text):
        ch = text[j]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "{":
            k = _closing(text, j, "{", "}")
            if depth == 0:
                return k + 1
            j = k
        elif ch == ";" and depth == 0:
            return j + 1
        j += 1
    return len(text)


def strip_cfg_test(code):
    """Items under `#[cfg(test)]` blanked. Returns the code and the names of
    file modules declared under it (`#[cfg(test)] mod tests;`)."""
    test_files = []
    while True:
        m = _CFG_TEST.search(code)
        if not m:
            return code, test_files
        i = m.end()
        while (a := _ATTRIBUTE.match(code, i)) is not None:
            i = _skip_attribute(code, a.end() - 1)
        if (f := _FILE_MOD.match(code, i)) is not None:
            test_files.append(f.group(1))
        end = _item_end(code, i)
        code = code[: m.start()] + _blank(code[m.start() : end]) + code[end:]


_INLINE_MOD = re.compile(r"\bmod\s+\w+\s*\{|[{}]")


def inline_mod_depths(code):
    """(offsets, depths): the nesting of inline `mod x { ... }` blocks, as a
    step function for bisect."""
    offsets, depths = [0], [0]
    stack = []  # for each open brace: does it open a module?
    depth = 0
    for m in _INLINE_MOD.finditer(code):
        tok = m.group(0)
        if tok == "}":
            if stack and stack.pop():
                depth -= 1
                offsets.append(m.end())
                depths.append(depth)
        elif tok == "{":
            stack.append(False)
        else:
            stack.append(True)
            depth += 1
            offsets.append(m.end())
            depths.append(depth)
    return offsets, depths


# A path that may lead to the crate root: crate::, $crate::, a run of
# super::, or (in a binary) the library's name.
_PATH_START = re.compile(r"(?<![\w:$])(\$crate|crate|(?:super\s*::\s*)*super|::\s*\w+|\w+)\s*::\s*")
_IDENT = re.compile(r"\w+")


def _group_items(code, i):
    """`i` just after `{`: the first identifier of each top-level item of the
    group, and the offset after the closing `}`."""
    depth, j, start, items = 1, i, i, []
    while j < len(code) and depth:
        ch = code[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if (ch == "," and depth == 1) or depth == 0:
            m = _IDENT.search(code, start, j)
            if m:
                items.append((m.group(0), m.start()))
            start = j + 1
        j += 1
    return items, j


def references(code, file_depth, lib_name):
    """(top-level module, offset) for every path in `code` that names a
    top-level module from the crate root. `file_depth`: how deep the file's
    module is (src/x.rs and src/x/mod.rs: 1; src/x/y.rs: 2); `lib_name`: the
    library's name when the file belongs to a binary, else None."""
    offsets, depths = inline_mod_depths(code)
    out = []
    for m in _PATH_START.finditer(code):
        head = re.sub(r"\s", "", m.group(1))
        if head in ("crate", "$crate"):
            pass
        elif head.startswith("super"):
            supers = head.count("super")
            depth = file_depth + depths[bisect_right(offsets, m.start()) - 1]
            if supers != depth:
                continue  # stays inside the module, or is not a path at all
        elif lib_name is not None and head.lstrip(":") == lib_name:
            pass
        else:
            continue
        rest = m.end()
        if code.startswith("{", rest):
            items, _ = _group_items(code, rest + 1)
            out.extend((name, off) for name, off in items if name != "self")
        else:
            ident = _IDENT.match(code, rest)
            if ident:
                out.append((ident.group(0), ident.start()))
    return out


# --------------------------------------------------------------------------
# The graph


class Graph:
    def __init__(self, modules):
        self.modules = sorted(modules)
        # (from, to) -> [(path, line)]
        self.edges = defaultdict(list)

    def deps(self, module):
        return sorted({b for (a, b) in self.edges if a == module})

    def add(self, a, b, where):
        self.edges[(a, b)].append(where)


def lib_name(root):
    """The library's crate name, from Cargo.toml ([lib] name, else the
    package's), with '-' as '_'."""
    try:
        text = open(os.path.join(root, "Cargo.toml"), encoding="utf-8").read()
    except OSError:
        return None
    section, names = None, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif (m := re.match(r'name\s*=\s*"([^"]+)"', line)) and section in ("[package]", "[lib]"):
            names[section] = m.group(1)
    name = names.get("[lib]") or names.get("[package]")
    return name.replace("-", "_") if name else None


def _module_dir(rel):
    """The directory holding the child modules of the module in file `rel`."""
    d, base = os.path.split(rel)
    if base in ("mod.rs", "lib.rs", "main.rs"):
        return d
    return os.path.join(d, base[:-3])


def build(root):
    src = os.path.join(root, "src")
    modules = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith(".rs"):
            modules.setdefault(name[:-3], [])
        elif os.path.isdir(path):
            modules.setdefault(name, [])
    files = []  # (module, path relative to root, depth)
    for module in sorted(modules):
        single = os.path.join(src, module + ".rs")
        if os.path.isfile(single):
            files.append((module, os.path.relpath(single, root), 1))
        tree = os.path.join(src, module)
        if os.path.isdir(tree):
            for dirpath, dirnames, filenames in os.walk(tree):
                dirnames.sort()
                for f in sorted(filenames):
                    if not f.endswith(".rs"):
                        continue
                    full = os.path.join(dirpath, f)
                    parts = os.path.relpath(full, src).split(os.sep)
                    depth = len(parts) - (1 if f == "mod.rs" else 0)
                    files.append((module, os.path.relpath(full, root), depth))

    library = lib_name(root)
    graph = Graph(modules)
    test_only = set()  # files of modules declared under #[cfg(test)]
    # Parents before children, so a test-only file module is known before
    # its file is read.
    files.sort(key=lambda f: (f[1].count(os.sep), f[1]))
    for module, rel, depth in files:
        if any(rel == t or rel.startswith(t + os.sep) for t in test_only):
            continue
        text = open(os.path.join(root, rel), encoding="utf-8").read()
        code, test_mods = strip_cfg_test(strip_comments_and_strings(text))
        for name in test_mods:
            child = os.path.join(_module_dir(rel), name)
            test_only.update({child + ".rs", child})
        line_starts = [0] + [m.end() for m in re.finditer("\n", code)]
        is_bin = module == "main"
        refs = references(code, 0 if module in ("main", "lib") else depth, library if is_bin else None)
        for target, offset in refs:
            if target == module or target not in modules or target in ("main", "lib"):
                continue
            line = bisect_right(line_starts, offset)
            graph.add(module, target, (rel, line))
    return graph


def strongly_connected(graph, nodes):
    """Tarjan's algorithm over `nodes` only: the components, each sorted."""
    succ = {n: [b for b in graph.deps(n) if b in nodes] for n in nodes}
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def elementary_cycles(graph, component, limit):
    """The simple cycles within `component`, each starting at its smallest
    module, shortest first; at most `limit` are searched for."""
    members = sorted(component)
    succ = {n: [b for b in graph.deps(n) if b in component] for n in members}
    cycles = []

    def walk(start, path, seen):
        for w in succ[path[-1]]:
            if len(cycles) >= limit:
                return
            if w == start:
                cycles.append(list(path))
            elif w > start and w not in seen:
                seen.add(w)
                path.append(w)
                walk(start, path, seen)
                path.pop()
                seen.discard(w)

    for s in members:
        walk(s, [s], {s})
    cycles.sort(key=lambda c: (len(c), c))
    return cycles


def _where(graph, a, b, verbose):
    places = graph.edges[(a, b)]
    if verbose:
        return ", ".join(f"{p}:{n}" for p, n in places)
    more = f" (+{len(places) - 1} more)" if len(places) > 1 else ""
    return f"{places[0][0]}:{places[0][1]}{more}"


def check_cycles(graph, out, verbose=False, max_cycles=20):
    nodes = {m for m in graph.modules if m not in ROOTS}
    components = [c for c in strongly_connected(graph, nodes) if len(c) > 1]
    if not components:
        print(f"module graph: {len(graph.modules)} modules, no cycle", file=out)
        return 0
    total = 0
    for k, comp in enumerate(components, 1):
        print(f"cycle {k}: {len(comp)} modules depend on each other: {', '.join(comp)}", file=out)
        print("  edges inside it (one example each):", file=out)
        members = set(comp)
        for a in comp:
            for b in graph.deps(a):
                if b in members:
                    print(f"    {a} -> {b}: {_where(graph, a, b, verbose)}", file=out)
        cycles = elementary_cycles(graph, members, CYCLE_SEARCH_LIMIT)
        shown = cycles[:max_cycles]
        total += len(cycles)
        count = f"{len(cycles)}{'+' if len(cycles) >= CYCLE_SEARCH_LIMIT else ''}"
        if len(shown) < len(cycles):
            print(f"  its {count} simple cycles, the {len(shown)} shortest (--max-cycles N for more):", file=out)
        else:
            print(f"  its {count} simple cycle{'s' if len(cycles) > 1 else ''}:", file=out)
        for cycle in shown:
            print(f"    {' -> '.join(cycle + [cycle[0]])}", file=out)
            for a, b in zip(cycle, cycle[1:] + [cycle[0]]):
                print(f"      {a} -> {b}: {_where(graph, a, b, False)}", file=out)
    print(
        f"module graph: {len(graph.modules)} modules, "
        f"{len(components)} group{'s' if len(components) > 1 else ''} of modules in a cycle "
        f"({', '.join(str(len(c)) for c in components)} modules), {total} simple cycles",
        file=out,
    )
    return 1


def check_forbidden(graph, forbidden, out):
    status = 0
    for target in forbidden:
        if target not in graph.modules:
            print(f"--forbid {target}: no module {target} under src/", file=out)
            return 2
        importers = [a for a in graph.modules if a not in ROOTS and a != target and (a, target) in graph.edges]
        if not importers:
            print(f"forbid {target}: only {', '.join(r for r in ROOTS if r != target)} may import it; none else does", file=out)
            continue
        status = 1
        print(f"forbid {target}: {len(importers)} module(s) import it:", file=out)
        for a in importers:
            places = graph.edges[(a, target)]
            print(f"  {a} -> {target} ({len(places)} reference{'s' if len(places) > 1 else ''}):", file=out)
            for p, n in places:
                print(f"    {p}:{n}", file=out)
    return status


def print_graph(graph, out):
    for m in graph.modules:
        deps = graph.deps(m)
        tag = " (root)" if m in ROOTS else ""
        print(f"{m}{tag} -> {', '.join(deps) if deps else '-'}", file=out)


# --------------------------------------------------------------------------
# Self test


def self_test():
    import io

    files = {
        "Cargo.toml": '[package]\nname = "toy-crate"\n\n[lib]\nname = "toy"\n',
        "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod server;\npub mod demo;\n",
        "src/main.rs": "use toy::{server, a::X};\nfn main() { toy::d::f(); }\n",
        "src/demo.rs": "use crate::server::start;\n",
        # a -> b (use), a -> c (grouped, nested group)
        "src/a.rs": "use crate::b;\nuse crate::{c::{x, y}, self};\npub struct X;\n",
        # b -> a via super:: climbing to the root from src/b/mod.rs
        "src/b/mod.rs": "mod inner;\nuse super::a::X;\n// crate::d::nope in a comment\n",
        # b/inner.rs is two deep: super::super reaches the root -> server;
        # super::x stays in b; a string and a raw string are not read.
        "src/b/inner.rs": (
            "use super::super::server;\nuse super::other;\n"
            'const S: &str = "crate::d::nope";\nconst R: &str = r#"crate::d::"nope""#;\n'
            "fn f<'a>(c: char) -> &'a str { if c == '\"' { \"\" } else { \"x\" } }\n"
        ),
        # c: inline path; tests and test-only items ignored; an inline module
        # makes super:: one level deeper.
        "src/c.rs": (
            "pub fn g() { crate::d::f(); }\n"
            "mod deep { use super::super::a; }\n"
            "#[cfg(test)]\nmod tests {\n    use crate::server;\n    #[test]\n    fn t() { crate::a::X; }\n}\n"
            "#[cfg(test)]\n#[allow(dead_code)]\nfn helper() { crate::server::x(); }\n"
            "#[cfg(test)]\nmod files;\n"
        ),
        "src/c/files.rs": "use crate::server;\n",
        "src/d.rs": "pub fn f() {}\n",
        # server -> b: with b -> server this is a second cycle.
        "src/server.rs": "use crate::b::inner;\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        g = build(tmp)
        got = {m: g.deps(m) for m in g.modules}
        want = {
            "a": ["b", "c"],
            "b": ["a", "server"],
            "c": ["a", "d"],
            "d": [],
            "demo": ["server"],
            "lib": [],
            "main": ["a", "d", "server"],
            "server": ["b"],
        }
        assert got == want, f"graph:\n got  {got}\n want {want}"
        assert g.edges[("b", "server")] == [(os.path.join("src", "b", "inner.rs"), 1)], g.edges[("b", "server")]
        assert g.edges[("c", "a")] == [(os.path.join("src", "c.rs"), 2)], g.edges[("c", "a")]
        assert g.edges[("main", "d")] == [(os.path.join("src", "main.rs"), 2)]

        out = io.StringIO()
        assert check_cycles(g, out) == 1
        text = out.getvalue()
        assert "cycle 1: 4 modules depend on each other: a, b, c, server" in text, text
        for chain in ("a -> b -> a", "b -> server -> b", "a -> c -> a"):
            assert f"    {chain}\n" in text, (chain, text)
        assert "      b -> server: src/b/inner.rs:1\n" in text.replace(os.sep, "/"), text

        out = io.StringIO()
        assert check_forbidden(g, ["server"], out) == 1
        text = out.getvalue().replace(os.sep, "/")
        assert "b -> server (1 reference):\n    src/b/inner.rs:1\n" in text, text
        assert "demo ->" not in text and "main ->" not in text, text

        # Without the cycles: no cycle, and nothing but roots imports server.
        for rel in ("src/b/inner.rs", "src/c.rs", "src/c/files.rs"):
            os.remove(os.path.join(tmp, rel))
        os.rmdir(os.path.join(tmp, "src/c"))
        with open(os.path.join(tmp, "src/b/mod.rs"), "w", encoding="utf-8") as f:
            f.write("use crate::d;\n")
        with open(os.path.join(tmp, "src/server.rs"), "w", encoding="utf-8") as f:
            f.write("use crate::{a, b};\n")
        g = build(tmp)
        out = io.StringIO()
        assert check_cycles(g, out) == 0
        assert out.getvalue() == "module graph: 7 modules, no cycle\n", out.getvalue()
        out = io.StringIO()
        assert check_forbidden(g, ["server"], out) == 0, out.getvalue()
    print("modgraph self-test: ok")
    return 0


# --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="sluice's module dependency graph: cycle check and import rules.",
    )
    parser.add_argument(
        "--root",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="the repository (default: this script's parent directory's parent)",
    )
    parser.add_argument("--print", action="store_true", help="print the graph, one `module -> deps` a line, and exit")
    parser.add_argument(
        "--forbid",
        action="append",
        default=[],
        metavar="MODULE",
        help="report every module but main/lib/demo that imports MODULE (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="every file:line of an edge, not one")
    parser.add_argument("--max-cycles", type=int, default=20, help="simple cycles listed per component, shortest first (default 20)")
    parser.add_argument("--self-test", action="store_true", help="check this script on a synthetic tree")
    args = parser.parse_args(argv)

    if args.self_test:
        return self_test()
    graph = build(args.root)
    if args.print:
        print_graph(graph, sys.stdout)
        return 0
    status = check_cycles(graph, sys.stdout, args.verbose, args.max_cycles)
    if args.forbid:
        forbid = check_forbidden(graph, args.forbid, sys.stdout)
        status = max(status, forbid)
    return status


if __name__ == "__main__":
    sys.exit(main())
