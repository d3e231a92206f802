#!/usr/bin/env python3
"""Lists import cycles between the top-level modules of each library crate (crates/*/src).

`lib.rs` says that a crate's modules point down one list: a file of module `a` (`a.rs` or any
file under `a/`) that names `crate::b::...` makes `a` import `b`. Comments and test modules
(everything from a `#[cfg(test)]` line on) are ignored, so are `cfg(test)`-only modules declared
in lib.rs. Prints each module's imports and every cycle, and exits 1 if there is one.

Usage: python3 scripts/module_cycles.py [REPO_ROOT]
"""
import os
import re
import sys

USE = re.compile(r'\bcrate::([a-z_][a-z0-9_]*)')
GROUP = re.compile(r'\bcrate::\{([^{}]*)\}')


def modules(src):
    """top-level module -> its files."""
    out = {}
    for root, _, names in os.walk(src):
        for n in names:
            if not n.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(root, n), src)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith('.rs') else top
            if top in ('lib', 'main'):
                continue
            out.setdefault(top, []).append(os.path.join(root, n))
    return out


def code(path):
    text = open(path, encoding='utf-8').read()
    i = text.find('#[cfg(test)]')
    text = text if i < 0 else text[:i]
    return re.sub(r'//[^\n]*', '', text)


def cycles(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    bad = False
    crates = os.path.join(root, 'crates')
    for crate in sorted(os.listdir(crates)):
        src = os.path.join(crates, crate, 'src')
        if not os.path.isfile(os.path.join(src, 'lib.rs')):
            continue
        mods = modules(src)
        edges = {}
        for m, files in mods.items():
            for f in files:
                text = code(f)
                names = set(USE.findall(text))
                for g in GROUP.findall(text):
                    names.update(p.strip().split('::')[0] for p in g.split(',') if p.strip())
                edges.setdefault(m, set()).update(n for n in names if n in mods and n != m)
        print(f'{crate}:')
        for m in sorted(edges):
            if edges[m]:
                print(f'  {m} -> {", ".join(sorted(edges[m]))}')
        for comp in cycles(edges):
            bad = True
            print(f'  CYCLE between modules: {" <-> ".join(comp)}')
    if not bad:
        print('no import cycles between the modules of any library crate')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
