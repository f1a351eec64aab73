"""Functions stay short enough to read at once: one over MAX_LINES lines in server/ or client/
fails unless a `# long: <reason>` comment on its def line or the line above says why it stays
whole, and at most MAX_LONG such exceptions exist."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60
MAX_LONG = 3
MARKER = "# long:"


def long_functions_in(path: Path) -> list[tuple[str, int, bool]]:
    """(path:line name, lines, has a `# long:` reason) of every function of `path` over
    MAX_LINES lines, counted from its def line to its last line."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_LINES:
            continue
        above = lines[node.lineno - 2] if node.lineno > 1 else ""
        marked = MARKER in lines[node.lineno - 1] or above.strip().startswith(MARKER)
        found.append((f"{path}:{node.lineno} {node.name}", length, marked))
    return found


def long_functions() -> list[tuple[str, int, bool]]:
    """The long functions of every module in server/ and client/."""
    return [
        (where.removeprefix(f"{ROOT}/"), lines, marked)
        for root in (ROOT / "server", ROOT / "client")
        for path in sorted((root / "maxact").rglob("*.py"))
        for where, lines, marked in long_functions_in(path)
    ]


def test_every_function_over_sixty_lines_says_why_it_stays_whole() -> None:
    unmarked = [f"{where} ({n} lines)" for where, n, marked in long_functions() if not marked]
    assert not unmarked, f"split these or add a '{MARKER} <reason>' comment: {unmarked}"


def test_at_most_three_functions_are_over_sixty_lines() -> None:
    found = long_functions()
    assert len(found) <= MAX_LONG, [f"{where} ({n} lines)" for where, n, _ in found]


def test_the_check_tells_a_long_function_with_a_reason_from_one_without(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    module = tmp_path / "module.py"
    module.write_text(
        f"def short() -> None:\n    pass\n\n\ndef bare() -> None:\n{body}\n\n\n"
        f"{MARKER} one table\ndef marked() -> None:\n{body}\n\n\n"
        f"def inline() -> None:  {MARKER} one table\n{body}\n",
        encoding="utf-8",
    )
    found = {where.rsplit(" ", 1)[1]: (n, marked) for where, n, marked in long_functions_in(module)}
    assert found == {
        "bare": (MAX_LINES + 1, False),
        "marked": (MAX_LINES + 1, True),
        "inline": (MAX_LINES + 1, True),
    }
