"""Interop with other libraries (imported lazily; each needs its extra)."""
