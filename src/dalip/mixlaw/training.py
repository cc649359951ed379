"""Training one pilot of a study (`train_pilot`): an ordinary `dalip train` run in a folder of
the study's, reused when finished, resumed from its last checkpoint, or started again.

Before a pilot trains, the study's manifest announces the pilot's config.yaml: the folder is
then the study's own, even if the pilot is killed before it writes anything else. A pilot
killed before its first checkpoint leaves its config, metrics and half-written files behind,
which its own manifest does not list yet, and `dalip train` refuses such a folder; in a folder
the study owns, with nothing to reuse or resume, those files (`TRAIN_FILES`) are removed and
the pilot starts again. Nothing else is removed: a folder the study did not make, or a file
that `dalip train` does not write, is left as it is (and `dalip train` refuses the folder).
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from dalip.config import TrainConfig
from dalip.experiments import train_stage
from dalip.outputs import OutputFolder, list_files, read_manifest, remove_listed
from dalip.train.state import training_checkpoints

# What a `dalip train` run writes into its folder before its first checkpoint or model, with
# dalip.atomic's half-written temporaries (".NAME.<random>.tmp"): what a restart may remove.
TRAIN_FILES = (
    "config.yaml",
    ".config.yaml.*.tmp",
    "metrics.jsonl",
    "tensorboard/*",
    "checkpoints/.step_*.pt.*.tmp",
    ".model.safetensors.*.tmp",
)


def train_pilot(config: TrainConfig, study: OutputFolder) -> float:
    """Train the pilot `config` describes in its out_dir, a folder under the study's (`study`);
    returns the seconds spent (0 when a finished run was reused)."""
    run = Path(config.out_dir)
    inside = run.relative_to(study.root).as_posix()
    marker = f"{inside}/config.yaml"
    if _owned(study, run, marker) and _restartable(run):
        stale = [name for name in list_files(run) if any(fnmatch(name, p) for p in TRAIN_FILES)]
        remove_listed(run, stale)
        study.foreign.difference_update(f"{inside}/{name}" for name in stale)
    if marker not in study.foreign:  # never claim a config.yaml the study did not write
        study.expect([marker])  # recorded before the pilot writes anything
    return train_stage(config, cacheable=True)


def _owned(study: OutputFolder, run: Path, marker: str) -> bool:
    """Whether `run` is a pilot folder of the study's: its config.yaml is listed in the study's
    manifest (announced before the pilot trained), or it holds a `dalip train` manifest."""
    if (run / "config.yaml").is_file() and marker not in study.foreign:
        return True
    manifest = read_manifest(run) if run.is_dir() else None
    return manifest is not None and manifest.get("command") == "train"


def _restartable(run: Path) -> bool:
    """Nothing in `run` to reuse (a model) or resume from (a training checkpoint)."""
    return not (run / "model.safetensors").exists() and not training_checkpoints(run / "checkpoints")
