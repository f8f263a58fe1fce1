"""Studies that compare trained models on equal terms. ``leakage``: the paper's comparison of the I2V paradigms
(how the condition image enters the model) in and out of domain, `flashi2v study leakage CONFIG`.

Stages, each resumable and each writing under one folder:

    prepare   the kit: frozen codec, caption embeddings, training photos, in- and out-of-domain sets (CPU)
    train     every (paradigm, seed) run, as separate `flashi2v train` processes side by side (GPU)
    generate  every run on both sets, same sampler and noise
    evaluate  `flashi2v eval videos` per run and set, and for the codec round trip of the references
    report    tables, curves, strips and the verdicts on the paper's claims (from small files only)
"""

from .config import STAGES, LeakageStudyConfig, load_study_config, study_from_dict
from .leakage import run_leakage_study

__all__ = ["STAGES", "LeakageStudyConfig", "load_study_config", "run_leakage_study", "study_from_dict"]
