#!/usr/bin/env python3
"""List `crate::` import edges between top-level modules and between files
under src/, and report every cycle (strongly connected component > 1).

Usage: tools/module_cycles.py [src-dir]
Exit status 1 when a cycle exists. Test modules (`#[cfg(test)] mod tests`
blocks at the end of a file, and files named tests.rs / testing.rs) are
skipped: test code may reach anywhere.
"""
import os, re, sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"

def file_module(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel

files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[tuple(file_module(p))] = p

def strip_tests(text):
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text

def resolve(path_parts):
    # longest prefix that is a file
    for k in range(len(path_parts), 0, -1):
        if tuple(path_parts[:k]) in files:
            return tuple(path_parts[:k])
    return None

USE = re.compile(r"crate::((?:\w+::)*\w+|(?:\w+::)*\{)")
edges_file, edges_mod = {}, {}
for mod, p in files.items():
    if mod and mod[-1] in ("tests", "testing"):
        continue
    text = strip_tests(open(p).read())
    # expand `crate::a::{b, c::d}` one level
    for m in re.finditer(r"crate::([\w:]*?)\{([^}]*)\}", text):
        base = [x for x in m.group(1).split("::") if x]
        for item in m.group(2).split(","):
            item = item.strip().split(" as ")[0]
            parts = base + [x for x in item.split("::") if x and x != "self"]
            t = resolve(parts)
            if t is not None and t != mod:
                edges_file.setdefault(mod, set()).add(t)
    for m in re.finditer(r"crate::((?:\w+::)*\w+)", text):
        parts = m.group(1).split("::")
        t = resolve(parts)
        if t is not None and t != mod:
            edges_file.setdefault(mod, set()).add(t)
    # super:: edges
    for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
        base = list(mod[:-1]) if os.path.basename(p) not in ("mod.rs",) else list(mod[:-1])
        t = resolve(base + m.group(1).split("::"))
        if t is not None and t != mod:
            edges_file.setdefault(mod, set()).add(t)

for a, ts in edges_file.items():
    for b in ts:
        if a and b and a[0] != b[0]:
            edges_mod.setdefault(a[0], set()).add(b[0])

def sccs(graph):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    nodes = set(graph) | {b for v in graph.values() for b in v}
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index: strong(v)
    return out

bad = 0
for c in sccs(edges_mod):
    bad = 1
    print("module cycle:", " <-> ".join(sorted(c)))
    for a in sorted(c):
        for b in sorted(edges_mod.get(a, ())):
            if b in c:
                via = sorted("/".join(x) + " -> " + "/".join(y) for x, ys in edges_file.items() for y in ys if x and y and x[0] == a and y[0] == b)
                print(f"  {a} -> {b}: " + "; ".join(via))
for c in sccs(edges_file):
    bad = 1
    print("file cycle:", " <-> ".join(sorted("/".join(x) for x in c)))
if not bad:
    print(f"no cycles: {len(files)} files, {sum(len(v) for v in edges_file.values())} file edges, {sum(len(v) for v in edges_mod.values())} module edges")
sys.exit(bad)
