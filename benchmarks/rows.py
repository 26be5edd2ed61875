"""Output of the GPU benchmark scripts: each result printed as a row the moment it finishes (a run cut
short by its time limit still shows what it measured), and all of them as one markdown table at the end."""
from __future__ import annotations

ROWS: list[tuple] = []


def row(*cells) -> None:
    ROWS.append(cells)
    print("ROW | " + " | ".join(map(str, cells)) + " |", flush=True)


def print_table(*header: str) -> None:
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in ROWS:
        print("| " + " | ".join(map(str, r)) + " |")
