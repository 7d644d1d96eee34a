"""Chapter 04: training the UNet — the config, the loss, one optimizer step, the loop, the run folder.

- :mod:`.config`: :class:`TrainConfig` (every setting of a run; :meth:`TrainConfig.for_profile` picks the defaults);
- :mod:`.losses`: the diffusion loss, min-SNR weights, timestep sampling;
- :mod:`.step`: one optimizer step (:func:`draw_batch`, :func:`build_train_parts`, :func:`train_step`);
- :mod:`.loop`: :func:`train`, the loop around it (samples, checkpoints, resume, DDP);
- :mod:`.run_folder`: one trainer per run folder, the resume policy, ``metrics.jsonl``;
- :mod:`.budget`: what a run will cost before it starts (:func:`measure_budget`: steps, epochs, minutes);
- :mod:`.live_plot`: :class:`LiveLossPlot`, the notebook callback;
- :mod:`.cli`: the command line, ``python -m helpers.training --config outputs/<run>/train_config.json``.
"""

from .budget import Budget, measure_budget
from .config import TrainConfig
from .live_plot import LiveLossPlot
from .loop import NonFiniteLossError, TrainEvent, TrainResult, train
from .run_folder import RunFolderError, read_metrics, sample_grids
from .tracking import logs_dir
from .step import Batch, Position, StepStats, TrainParts, build_train_parts, draw_batch, train_step

__all__ = ["Budget", "measure_budget", "TrainConfig", "LiveLossPlot", "NonFiniteLossError", "TrainEvent", "TrainResult", "train",
           "RunFolderError", "read_metrics", "sample_grids", "logs_dir", "Batch", "Position", "StepStats", "TrainParts",
           "build_train_parts", "draw_batch", "train_step"]
