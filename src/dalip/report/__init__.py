"""Reports: tables, plots and files rendered from evaluation results (suite.py: suites and
WiSE-FT sweeps; clip_benchmark.py: results in CLIP_benchmark's JSON format; figures.py: shared
figure helpers; text.py: user text made safe for the terminal and Markdown). The tools'
own reports live with them (frontier/, mixlaw/, quickstart/)."""
