"""Campaign reports for marketers: aggregates only, small cells suppressed, nothing loaded from anywhere.

``build_report(members, exclusions, run)`` turns one campaign run's member rows (the input contract
is in ``carecast.reports.facts``) into a ``PublishedReport``; ``write_report`` writes it as a
self-contained HTML page, a CSV export and a JSON summary; ``report_markdown`` gives the short
summary for Dagster metadata. Modules, one job each:

* ``facts``: the input contract and the one columnar aggregation over member rows;
* ``tables``: the published cells and every additive relation between them;
* ``disclosure``: ``<11`` for counts from 1 to 10, complementary suppression, and its proof;
* ``statistics``: two-proportion tests, Holm, the Newcombe interval;
* ``published``: the printed view, with rates, A/B tests and holdout lift from printed counts only;
* ``html_page``, ``charts``, ``csv_export``, ``markdown``, ``formatting``: the renderers;
* ``build``: the steps in order, and the files.
"""

from carecast.reports.build import ReportFiles, build_report, write_report
from carecast.reports.disclosure import COMPLEMENT, SUPPRESSED, suppress_cells, suppress_count
from carecast.reports.facts import HOLDOUT, TREATED
from carecast.reports.markdown import report_markdown
from carecast.reports.published import CampaignRun, PublishedReport

__all__ = [
    "COMPLEMENT",
    "HOLDOUT",
    "SUPPRESSED",
    "TREATED",
    "CampaignRun",
    "PublishedReport",
    "ReportFiles",
    "build_report",
    "report_markdown",
    "suppress_cells",
    "suppress_count",
    "write_report",
]
