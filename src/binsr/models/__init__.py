"""The model zoo. Each family lives in its own small file and registers its entry functions by name.

Files are imported explicitly below (not discovered), so one broken file cannot silently vanish.

| name | paper | binary parts |
|---|---|---|
| ``srresnet`` | Ledig et al. 2017 (BasicSR MSRResNet, no BN) — BBCU Table 1 FP row | none |
| ``edsr_baseline`` | Lim et al. 2017, EDSR-baseline | none |
| ``bbcu_l`` / ``bbcu_m`` | Xia et al. 2023 (BBCU, ICLR) | body / body + upsampler + ``conv_hr`` |
| ``bnn``, ``bireal``, ``irnet``, ``reactnet``, ``btm`` | BBCU Table 1 peers | body |
| ``ma2019`` | Ma et al. 2019 | body weights only |
| ``e2fif`` | Song et al. 2022 | body |
| ``ours`` | this project: BBCU-L + switchable ingredients | body (optionally upsampler) |
"""

from binsr.models import bbcu, e2fif, edsr, ma2019, ours, peers, srresnet
from binsr.models.common import SRModel, set_progress
from binsr.models.registry import create_model, list_models, model_factory, register_model

__all__ = [
    "SRModel",
    "bbcu",
    "create_model",
    "e2fif",
    "edsr",
    "list_models",
    "ma2019",
    "model_factory",
    "ours",
    "peers",
    "register_model",
    "set_progress",
    "srresnet",
]
