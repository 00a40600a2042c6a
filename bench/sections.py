"""Benchmark results live in bench/results/, one file per benchmark (named after its script) and
in it one current section per machine: a new run replaces the section of the same benchmark on
the same machine (the same CPU and kernel caps), other machines' sections stay."""
from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _key(section: str) -> tuple[str, str]:
    """(heading without its date, machine): what a newer section replaces."""
    heading = re.sub(r",?\s*\(?\d{4}-\d{2}-\d{2}\)?", "", section.splitlines()[0]).strip()
    machine = next((line for line in section.splitlines() if line.startswith("Machine:")), "")
    parts = machine.split("; ")
    caps = [p for p in parts if p.startswith("kernels capped")]
    return heading, "; ".join(parts[:1] + caps)


def sections(text: str) -> tuple[str, list[str]]:
    """(the file's header, its '## ' sections in order)."""
    head, *rest = re.split(r"(?m)^(?=## )", text)
    return head, [s.rstrip() + "\n" for s in rest]


def write_section(path: Path, header: str, section: str) -> None:
    """Put ``section`` (a '## ' heading, a 'Machine:' line, its tables) into ``path``, replacing
    the section of the same benchmark and machine; ``header`` starts a new file."""
    head, old = sections(path.read_text()) if path.is_file() else (header.rstrip() + "\n\n", [])
    kept = [s for s in old if _key(s) != _key(section)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + "\n".join(kept + [section.rstrip() + "\n"]))
