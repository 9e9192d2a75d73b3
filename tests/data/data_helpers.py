"""Small writers and row makers shared by the data tests (imported as a plain module)."""

import json


def write_jsonl(path, rows):
    """Write rows to ``path``; a ``str``/``bytes`` row is written verbatim as one line."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, bytes):
                line = row
            elif isinstance(row, str):
                line = row.encode()
            else:
                line = json.dumps(row).encode()
            f.write(line + b"\n")
    return str(path)


def alpaca_rows(n, long_every=0):
    """``n`` distinct alpaca rows; every ``long_every``-th one has a much longer output."""
    rows = []
    for i in range(n):
        body = f"    return x + {i}\n" * (20 if long_every and i % long_every == 0 else 1)
        rows.append({"instruction": f"Write function number {i}.",
                     "input": "" if i % 3 else f"def f{i}(x):", "output": body})
    return rows


def text_rows(n):
    """``n`` distinct code documents of varied lengths (for packing)."""
    return [{"text": "def f%d(x):\n%s" % (i, "    x = x + 1\n" * (1 + i % 7))} for i in range(n)]
