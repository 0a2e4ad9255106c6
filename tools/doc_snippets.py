#!/usr/bin/env python3
"""Turns the ```cpp blocks of a Markdown file into one C++ translation unit, so that the
examples in the docs are compiled (and run) by a test and never rot.

  doc_snippets.py docs/workers.md > workers_md.cc

Blocks are copied in order. A block whose first line is `// doc: skip` is left out (for
fragments that are not meant to compile on their own). The Markdown must contain a block that
defines `int main()`.
"""
import re
import sys


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: doc_snippets.py FILE.md\n")
        return 2
    path = argv[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```cpp\n(.*?)^```", text, flags=re.S | re.M)
    kept = [b for b in blocks if not b.startswith("// doc: skip")]
    if not kept:
        sys.stderr.write(f"doc_snippets.py: {path} has no ```cpp blocks\n")
        return 1
    if not any(re.search(r"\bint main\(", b) for b in kept):
        sys.stderr.write(f"doc_snippets.py: no block of {path} defines int main()\n")
        return 1
    out = [f"// Generated from {path} by tools/doc_snippets.py. Do not edit.\n"]
    for i, block in enumerate(kept):
        out.append(f"// ---- block {i + 1} ----\n{block}")
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
