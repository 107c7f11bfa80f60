#!/usr/bin/env python3
"""Fail when the files of a crate import each other in a circle.

For every crate of the workspace (each package's library, binaries, tests,
examples and benches, each its own crate) this builds the file-level import
graph: an edge A -> B when file A names a module path that lives in file B,
through `use crate::...`, `use super::...`, `use self::...`, `use child::...`
(a module declared in A's module) or the same paths written inline in code
(`crate::blk::run(...)`, `#[command(long_about = crate::study::ABOUT)]`). A
path resolves to the file of its deepest module: `crate::common::error::Result`
is `common/error.rs`, `crate::Result` the crate root. `mod x;` declarations
are not imports (a parent declares its children); imports inside a file (a
test module's `use super::*`) are not edges either. Comments and string
literals are ignored.

Any strongly connected set of two or more files is a circle: it is printed
with one concrete cycle and the line of every import in it, and the script
exits with status 1. With --upward it also lists, without failing, each import
of a file's own parent orchestration (a non-root file that imports the
`mod.rs`, `lib.rs` or `main.rs` of a module that contains it), which the
module-folder layout forbids even where it closes no circle.

    python3 .ci/import-cycles.py              # the whole workspace
    python3 .ci/import-cycles.py bench ring   # some packages (their folders)
    python3 .ci/import-cycles.py --upward     # also list imports of a parent
    python3 .ci/import-cycles.py --skip-root  # circles not through lib.rs/main.rs

Needs Python 3.11 (tomllib) and nothing else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORD_ROOTS = {"crate", "super", "self"}


# ---------------------------------------------------------------- lexing


def strip(src: str) -> str:
    """`src` with comments, string literals and char literals blanked to
    spaces (newlines kept, same length, so offsets and line numbers hold)."""
    out = list(src)
    n = len(src)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.match(r'b?r(#*)"', src[i : i + 300])) and not _ident_before(src, i):
            close = '"' + m.group(1)
            end = src.find(close, i + len(m.group(0)))
            end = n if end < 0 else end + len(close)
            blank(i, end)
            i = end
        elif c == '"' or (c == "b" and src.startswith('b"', i) and not _ident_before(src, i)):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'" or (c == "b" and src.startswith("b'", i) and not _ident_before(src, i)):
            # A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            k = i + (1 if c == "b" else 0)
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[k : k + 16])
            if m:
                blank(i, k + len(m.group(0)))
                i = k + len(m.group(0))
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def _ident_before(src: str, i: int) -> bool:
    return i > 0 and (src[i - 1].isalnum() or src[i - 1] == "_")


PATH_ATTR_RE = re.compile(r'#\[\s*path\s*=\s*"([^"]+)"\s*\]')


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# ---------------------------------------------------------------- parsing


@dataclass
class Use:
    """One imported path, as written, in the module `scope` of its file."""

    scope: tuple[str, ...]  # inline modules of the file around it
    path: list[str]
    line: int
    text: str


@dataclass
class ParsedFile:
    path: Path
    # Module declarations: (inline scope, name, #[path] value or None, is inline).
    mods: list[tuple[tuple[str, ...], str, str | None, bool]] = field(default_factory=list)
    uses: list[Use] = field(default_factory=list)


def expand_use_tree(tree: str) -> list[list[str]]:
    """`a::{b, c::{self, d as e}}` -> [[a, b], [a, c], [a, c, d]] (renames and
    globs dropped: only the path matters)."""
    tree = re.sub(r"\s+as\s+(" + IDENT + r")", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out: list[list[str]] = []

    def walk(prefix: list[str], s: str) -> None:
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + [x for x in head.split("::") if x], rest[: rest.rfind("}")])
                continue
            segs = [x for x in p.split("::") if x]
            while segs and segs[-1] in ("self", "*"):
                segs = segs[:-1]
            out.append(prefix + segs)

    walk([], tree)
    return [p for p in out if p]


USE_RE = re.compile(r"\buse\s+([^;]*);")
MOD_RE = re.compile(r"\bmod\s+(" + IDENT + r")\s*([;{])")
INLINE_PATH_RE = re.compile(
    r"(?<![A-Za-z0-9_:])((?:" + IDENT + r")(?:\s*::\s*" + IDENT + r")+)"
)


def parse(path: Path) -> ParsedFile:
    raw = path.read_text(encoding="utf-8", errors="replace")
    text = strip(raw)
    path_attrs = [(m.end(), m.group(1)) for m in PATH_ATTR_RE.finditer(raw)]
    pf = ParsedFile(path)
    # Braces give the inline-module scope of every offset.
    scope_at: list[tuple[int, tuple[str, ...]]] = [(0, ())]  # (offset, scope) changes
    stack: list[tuple[str, int]] = []  # (inline module, brace depth of its body)
    depth = 0
    mods_at = {m.start(): m for m in MOD_RE.finditer(text)}
    pending_inline: str | None = None
    i = 0
    while i < len(text):
        if i in mods_at and not _ident_before(text, i):
            m = mods_at[i]
            name, kind = m.group(1), m.group(2)
            scope = tuple(s for s, _ in stack)
            attr = None
            for end, val in path_attrs:
                between = re.sub(r"#\[[^\]]*\]|pub(\s*\([^)]*\))?|\s", "", text[end:i])
                if end <= i and not between:
                    attr = val
            pf.mods.append((scope, name, attr, kind == "{"))
            if kind == "{":
                pending_inline = name
                i = m.end() - 1
            else:
                i = m.end()
            continue
        c = text[i]
        if c == "{":
            depth += 1
            if pending_inline is not None:
                stack.append((pending_inline, depth))
                scope_at.append((i, tuple(s for s, _ in stack)))
                pending_inline = None
        elif c == "}":
            if stack and stack[-1][1] == depth:
                stack.pop()
                scope_at.append((i, tuple(s for s, _ in stack)))
            depth -= 1
        i += 1

    def scope_of(off: int) -> tuple[str, ...]:
        cur: tuple[str, ...] = ()
        for o, s in scope_at:
            if o > off:
                break
            cur = s
        return cur

    use_spans = []
    for m in USE_RE.finditer(text):
        use_spans.append((m.start(), m.end()))
        for p in expand_use_tree(m.group(1)):
            pf.uses.append(
                Use(scope_of(m.start()), p, line_of(text, m.start()), " ".join(m.group(0).split()))
            )
    in_use = lambda off: any(a <= off < b for a, b in use_spans)  # noqa: E731
    for m in INLINE_PATH_RE.finditer(text):
        if in_use(m.start()):
            continue
        segs = [s.strip() for s in m.group(1).split("::")]
        pf.uses.append(
            Use(scope_of(m.start()), segs, line_of(text, m.start()), m.group(1).replace(" ", ""))
        )
    return pf


# ---------------------------------------------------------------- crates


@dataclass
class Module:
    file: Path
    children: dict[str, "Module"] = field(default_factory=dict)
    parent: "Module | None" = None
    inline: bool = False  # declared with a body inside its parent's file
    name: str = ""


def is_mod_rs(path: Path, root: Path) -> bool:
    return path == root or path.name in ("mod.rs", "lib.rs", "main.rs")


class Crate:
    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self.parsed: dict[Path, ParsedFile] = {}
        self.problems: list[str] = []
        self.top = self._load(root, None, "crate")

    def _load(self, file: Path, parent: Module | None, name: str) -> Module:
        mod = Module(file=file, parent=parent, name=name)
        if file not in self.parsed:
            self.parsed[file] = parse(file)
        pf = self.parsed[file]
        # Build the inline modules of this file first, then attach file modules.
        by_scope: dict[tuple[str, ...], Module] = {(): mod}
        for scope, mname, attr, inline in pf.mods:
            host = by_scope.get(scope)
            if host is None:
                continue
            if inline:
                child = Module(file=file, parent=host, inline=True, name=mname)
                host.children[mname] = child
                by_scope[scope + (mname,)] = child
                continue
            base = file.parent if is_mod_rs(file, self.root) else file.with_suffix("")
            base = base.joinpath(*scope)
            if attr is not None:
                # #[path] is relative to the declaring file's folder.
                cands = [(file.parent.joinpath(*scope) / attr).resolve()]
            else:
                cands = [base / f"{mname}.rs", base / mname / "mod.rs"]
            target = next((c for c in cands if c.is_file()), None)
            if target is None:
                self.problems.append(f"{rel(file)}: `mod {mname};` has no file ({', '.join(rel(c) for c in cands)})")
                continue
            host.children[mname] = self._load(target, host, mname)
        return mod

    def modules(self) -> list[Module]:
        out, todo = [], [self.top]
        while todo:
            m = todo.pop()
            out.append(m)
            todo.extend(m.children.values())
        return out

    def module_of_scope(self, file_mod: Module, scope: tuple[str, ...]) -> Module:
        m = file_mod
        for s in scope:
            m = m.children.get(s, m)
        return m

    def resolve(self, at: Module, path: list[str]) -> Module | None:
        """The deepest module `path` names, seen from module `at`; None for an
        extern crate's path (std::..., xenio_ring::...)."""
        first = path[0]
        if first == "crate":
            m, rest = self.top, path[1:]
        elif first == "super" or first == "self":
            m, rest = at, path
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if m.parent is None:
                        return None
                    m = m.parent
                rest = rest[1:]
        elif first in at.children:
            m, rest = at, path
        else:
            return None
        for seg in rest:
            if seg in m.children:
                m = m.children[seg]
            else:
                break
        return m

    def edges(self, skip_root: bool = False) -> dict[Path, dict[Path, list[tuple[int, str]]]]:
        g: dict[Path, dict[Path, list[tuple[int, str]]]] = {}
        file_mods = {m.file: m for m in self.modules() if not m.inline}
        for file, fm in file_mods.items():
            g.setdefault(file, {})
            for u in self.parsed[file].uses:
                at = self.module_of_scope(fm, u.scope)
                target = self.resolve(at, u.path)
                if target is None or target.file == file:
                    continue
                if skip_root and target.file == self.root:
                    continue
                g[file].setdefault(target.file, []).append((u.line, u.text))
        return g

    def file_module(self, file: Path) -> Module | None:
        for m in self.modules():
            if m.file == file and not m.inline:
                return m
        return None


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(WORKSPACE))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- graph


def sccs(g: dict[Path, dict[Path, list]]) -> list[list[Path]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    on: set[Path] = set()
    stack: list[Path] = []
    out: list[list[Path]] = []
    counter = 0
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(g.get(nxt, {})))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def one_cycle(g, comp: list[Path]) -> list[Path]:
    """A shortest cycle through the first file of `comp` (BFS inside it)."""
    members = set(comp)
    start = comp[0]
    prev: dict[Path, Path] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g.get(v, {})):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


# ---------------------------------------------------------------- workspace


def crate_roots(pkg_dir: Path) -> list[tuple[str, Path]]:
    manifest = tomllib.loads((pkg_dir / "Cargo.toml").read_text())
    name = manifest.get("package", {}).get("name", pkg_dir.name)
    roots: list[tuple[str, Path]] = []
    lib = manifest.get("lib", {}).get("path", "src/lib.rs")
    if (pkg_dir / lib).is_file():
        roots.append((f"{name} (lib)", pkg_dir / lib))
    explicit = set()
    for kind in ("bin", "test", "example", "bench"):
        for t in manifest.get(kind, []):
            if "path" in t:
                p = pkg_dir / t["path"]
                explicit.add(p.resolve())
                roots.append((f"{name} ({kind} {t.get('name', p.stem)})", p))
    auto = [("bin", pkg_dir / "src/main.rs")]
    for kind, d in (("bin", "src/bin"), ("test", "tests"), ("example", "examples"), ("bench", "benches")):
        for p in sorted((pkg_dir / d).glob("*.rs")):
            auto.append((kind, p))
        for p in sorted((pkg_dir / d).glob("*/main.rs")):
            auto.append((kind, p))
    for kind, p in auto:
        if p.is_file() and p.resolve() not in explicit:
            roots.append((f"{name} ({kind} {p.stem if p.name != 'main.rs' else p.parent.name})", p))
    if (pkg_dir / "build.rs").is_file():
        roots.append((f"{name} (build script)", pkg_dir / "build.rs"))
    return roots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packages", nargs="*", help="package folders (default: every workspace member)")
    ap.add_argument("--upward", action="store_true", help="also list imports of a parent's orchestration")
    ap.add_argument("--edges", action="store_true", help="print every file-level import edge")
    ap.add_argument(
        "--skip-root",
        action="store_true",
        help="ignore imports of the crate root (lib.rs/main.rs), to see the circles among the other files",
    )
    args = ap.parse_args()

    ws = tomllib.loads((WORKSPACE / "Cargo.toml").read_text()).get("workspace", {})
    members = args.packages or ws.get("members", [])
    cycles = 0
    crates = 0
    files = 0
    for member in members:
        pkg = (WORKSPACE / member).resolve()
        if not (pkg / "Cargo.toml").is_file():
            print(f"{member}: no Cargo.toml", file=sys.stderr)
            return 2
        for label, root in crate_roots(pkg):
            crate = Crate(label, root.resolve())
            crates += 1
            for p in crate.problems:
                print(f"warning: {label}: {p}")
            g = crate.edges(args.skip_root)
            files += len(g)
            if args.edges:
                for a in sorted(g):
                    for b in sorted(g[a]):
                        print(f"  {label}: {rel(a)} -> {rel(b)}")
            for comp in sccs(g):
                cycles += 1
                print(f"CYCLE in {label}: {len(comp)} files import each other in a circle:")
                for f in comp:
                    print(f"    {rel(f)}")
                cyc = one_cycle(g, comp)
                print("  for example:")
                for a, b in zip(cyc, cyc[1:]):
                    line, text = g[a][b][0]
                    print(f"    {rel(a)}:{line} -> {rel(b)}   ({text})")
            if args.upward:
                for a in sorted(g):
                    am = crate.file_module(a)
                    ancestors = set()
                    m = am.parent if am else None
                    while m is not None:
                        if not m.inline:
                            ancestors.add(m.file)
                        m = m.parent
                    for b in sorted(g[a]):
                        if b in ancestors:
                            line, text = g[a][b][0]
                            print(f"upward in {label}: {rel(a)}:{line} imports its parent {rel(b)}   ({text})")
    if cycles:
        print(f"import-cycles: {cycles} circle(s) in {crates} crates ({files} files)")
        return 1
    print(f"import-cycles: no circle in {crates} crates ({files} files)")
    return 0


WORKSPACE = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.exit(main())
