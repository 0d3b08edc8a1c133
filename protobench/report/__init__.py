"""Presentation: console tables (:mod:`.console`), figures (:mod:`.plots`), listings."""
