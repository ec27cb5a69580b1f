"""Handlers for keras-hub's attention layers.

Imported by the registry the first time a keras-hub layer is looked up (so importing
kerasprune never imports keras-hub).
"""

from __future__ import annotations
