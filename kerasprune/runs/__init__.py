"""What a gradual run leaves behind: its target, its directory and its history rows.

A leaf of the package (it imports nothing else of kerasprune but the errors), so that
both the loops that write a run and the reports that read one can use it.
"""

from kerasprune.runs.history import HISTORY_FILE, SETTINGS_FILE, history_row, read_history
from kerasprune.runs.rundir import PRUNED_FILE, RunDirectory, atomic_save_model, atomic_write_text
from kerasprune.runs.target import Target, parse_target

__all__ = [
    "Target",
    "parse_target",
    "RunDirectory",
    "atomic_write_text",
    "atomic_save_model",
    "history_row",
    "read_history",
    "HISTORY_FILE",
    "SETTINGS_FILE",
    "PRUNED_FILE",
]
