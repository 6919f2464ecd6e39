#!/usr/bin/env python3
"""The import graph of a Rust crate's src/, one node per file (module), and its circles.

Edges: every `use` tree (grouped, nested, globbed, aliased) and every `crate::`/`super::`/
`self::` path in code, resolved to the deepest module file it names; a bare first segment
that is a child module of the file counts too. `mod x;` declarations are not imports, and
`#[cfg(test)] mod tests` blocks are left out. Usage: modgraph.py SRC_DIR [-v]. Exit 1 if a
circle exists."""
import os, re, sys

src = sys.argv[1]


def modpath(p):
    parts = os.path.relpath(p, src)[:-3].split('/')
    if parts[-1] == 'mod':
        parts = parts[:-1]
    if parts in (['lib'], ['main']):
        parts = []
    return tuple(parts)


files = {}
for root, _, fs in os.walk(src):
    for f in fs:
        if f.endswith('.rs'):
            files[modpath(os.path.join(root, f))] = os.path.join(root, f)


def resolve(path):
    for k in range(len(path), -1, -1):
        if tuple(path[:k]) in files:
            return tuple(path[:k])
    return None


def strip(text):
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)  # strings
    text = re.sub(r'//[^\n]*', '', text)
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    # drop `#[cfg(test)] mod NAME { ... }` blocks by brace matching
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {'{': 1, '}': -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return ''.join(out)


def use_paths(tree):
    """Expands a use tree into full paths (lists of segments)."""
    tree = re.sub(r'\s+', '', tree)
    def expand(t):
        # split a top-level comma list
        if t.startswith('{') and t.endswith('}'):
            parts, depth, cur = [], 0, ''
            for ch in t[1:-1]:
                if ch == ',' and depth == 0:
                    parts.append(cur); cur = ''
                    continue
                depth += {'{': 1, '}': -1}.get(ch, 0)
                cur += ch
            parts.append(cur)
            return [p for part in parts if part for p in expand(part)]
        i = t.find('::{')
        if i != -1:
            prefix = t[:i].split('::')
            return [prefix + rest for rest in expand(t[i + 2:])]
        t = re.sub(r'as\w+$', '', t) if '::' not in t.split('as')[-1] else t
        t = t.split(' as ')[0]
        segs = [s for s in re.sub(r'(?<=\w)as[A-Za-z_]\w*$', '', t).split('::') if s]
        return [segs]
    return expand(tree)


def target(mod, segs):
    """The module a path names, seen from `mod`."""
    segs = [s for s in segs if s not in ('*',)]
    if not segs:
        return None
    base = list(mod)
    if segs[0] == 'crate':
        base, segs = [], segs[1:]
    elif segs[0] in ('self', 'super'):
        while segs and segs[0] in ('self', 'super'):
            if segs[0] == 'super':
                base = base[:-1]
            segs = segs[1:]
    elif tuple(base + segs[:1]) in files:
        pass  # a child module named bare
    else:
        return None  # an external crate or a name in scope
    return resolve(base + [s for s in segs if s != 'self'])


graph = {}
for mod, p in files.items():
    if mod == ():
        continue
    text = strip(open(p).read())
    deps = set()
    for m in re.finditer(r'\buse\s+([^;]+);', text):
        for segs in use_paths(m.group(1)):
            t = target(mod, segs)
            if t is not None:
                deps.add(t)
    for m in re.finditer(r'\b(crate|super|self)((?:::[A-Za-z_]\w*)+)', text):
        t = target(mod, [m.group(1)] + m.group(2).split('::')[1:])
        if t is not None:
            deps.add(t)
    deps.discard(mod)
    deps.discard(())
    graph[mod] = deps

index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in graph:
            continue
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted('::'.join(c) for c in comp))


for v in list(graph):
    if v not in index:
        visit(v)
if '-v' in sys.argv:
    for v in sorted(graph):
        print('::'.join(v), '->', ' '.join(sorted('::'.join(d) for d in graph[v])))
for c in sccs:
    print('CIRCLE:', ' '.join(c))
print(len(graph), 'files,', len(sccs), 'circles')
sys.exit(1 if sccs else 0)
