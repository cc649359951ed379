"""Reports: tables, plots and files rendered from evaluation results (suite.py: suites and
WiSE-FT sweeps; quickstart.py: the quickstart's report; figures.py: shared figure helpers;
text.py: user text made safe for the terminal and Markdown)."""
