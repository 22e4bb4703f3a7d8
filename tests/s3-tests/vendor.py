#!/usr/bin/env python3
"""Re-vendors the Ceph s3-tests subset that kdfs runs (tests/s3-tests/README.md).

Usage: vendor.py CHECKOUT COMMIT
  CHECKOUT: a git clone (or bare repo) of https://github.com/ceph/s3-tests
  COMMIT:   the commit to copy from (README.md names the pinned one)

Copies LICENSE, s3tests/__init__.py, s3tests/functional/__init__.py and utils.py as
they are, and writes s3tests/functional/test_s3.py holding only the tests named in
selected.txt, verbatim, with the module-level helpers, constants and imports they use
(found by following names), so that the vendored file is small and needs no module
the subset does not use (iam, policy).
"""
import ast
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
VERBATIM = [
    "LICENSE",
    "s3tests/__init__.py",
    "s3tests/functional/__init__.py",
    "s3tests/functional/utils.py",
    "pytest.ini",
]


def show(checkout, commit, path):
    return subprocess.run(
        ["git", "-C", checkout, "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def names_in(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def defined_by(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def trim(source, wanted):
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    defs = {}
    for node in tree.body:
        for name in defined_by(node):
            defs.setdefault(name, []).append(node)
    missing = [t for t in wanted if t not in defs]
    if missing:
        raise SystemExit(f"not in test_s3.py at this commit: {missing}")
    # The autouse fixtures reach the tests by being imported, never by a name in them.
    keep, todo, used = set(), list(wanted), {"configfile", "setup_teardown"}
    while todo:
        name = todo.pop()
        for node in defs.get(name, []):
            if id(node) in keep:
                continue
            keep.add(id(node))
            refs = names_in(node)
            if isinstance(node, ast.FunctionDef):
                # Fixtures reach a test as its parameters.
                refs |= {a.arg for a in node.args.args}
            used |= refs
            todo.extend(r for r in refs if r in defs)
    out = []
    for node in tree.body:
        start = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno) - 1
        text = "".join(lines[start : node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            aliases = [a for a in node.names if (a.asname or a.name).split(".")[0] in used]
            if not aliases:
                continue
            if len(aliases) != len(node.names):
                node.names = aliases
                text = ast.unparse(node) + "\n"
            out.append(text)
        elif id(node) in keep:
            out.append("\n" + text + "\n")
    return "".join(out)


def main():
    checkout, commit = sys.argv[1], sys.argv[2]
    for path in VERBATIM:
        dest = HERE / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(show(checkout, commit, path))
    wanted = [
        line.split("#")[0].strip()
        for line in (HERE / "selected.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    header = (
        f"# Trimmed from ceph/s3-tests {commit} s3tests/functional/test_s3.py by\n"
        "# tests/s3-tests/vendor.py: the tests in selected.txt and what they use, verbatim.\n"
    )
    body = trim(show(checkout, commit, "s3tests/functional/test_s3.py"), wanted)
    (HERE / "s3tests/functional/test_s3.py").write_text(header + body)
    print(f"{len(wanted)} tests vendored from {commit}")


if __name__ == "__main__":
    main()
