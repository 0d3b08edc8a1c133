"""Leaderboard renderers (Markdown, CSV, console). Records and the store live in
:mod:`protobench.tasks.record` and :mod:`protobench.tasks.store`."""
