"""One voice for the stack's messages: ``[component] what happens``."""
from __future__ import annotations

import sys


def say(component: str, message: str) -> None:
    print(f"[{component}] {message}", flush=True)


def warn(component: str, message: str) -> None:
    print(f"[{component}] WARNING: {message}", file=sys.stderr, flush=True)
