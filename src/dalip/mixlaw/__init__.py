"""`dalip mixlaw`: choose the mixture of training domains with a data mixing law (Ye et al.
2024) fitted on pilot tunings, as the DALIP paper built PlantMix-13M.

    from dalip.mixlaw import build_study, run_study
    study = build_study(load_train_config("tune.yaml"), shares="0.5,0.65,0.8,0.9,0.95",
                        val={"plant": "plant/val.csv", "general": "general/val.csv"})
    results = run_study(study, "mixlaw-out")   # results["recommended"], ["recommended_weights"]

`plan` (domains, mixtures, pilot configs), `measure` (held-out losses), `fit` (laws,
errors, recommendation), `study` (the runs), `embedded` (the quickstart's data).
"""

from dalip.mixlaw.build import build_study
from dalip.mixlaw.fit import Objective, fit_study
from dalip.mixlaw.measure import Measures, measure
from dalip.mixlaw.plan import Pilot, domains_of, pilot_config
from dalip.mixlaw.study import Study, run_study, summary_lines

__all__ = [
    "Measures",
    "Objective",
    "Pilot",
    "Study",
    "build_study",
    "domains_of",
    "fit_study",
    "measure",
    "pilot_config",
    "run_study",
    "summary_lines",
]
