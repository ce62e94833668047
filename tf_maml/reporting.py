"""Benchmark tables: printed, and written where asked, with the machine named."""

import os
import platform


def machine():
    """A short description of this machine for result tables."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def publish_table(lines, out=None):
    """Prints a Markdown table (a list of lines) and writes it to `out` if given."""
    table = "\n".join(lines)
    print(table)
    if out:
        with open(out, "w") as f:
            f.write(table + "\n")
