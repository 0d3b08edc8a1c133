"""The static HTML leaderboard site (:func:`build_site`)."""

from protobench.leaderboard.site.build import SiteResult, build_site

__all__ = ["SiteResult", "build_site"]
