"""Chapter 06: scoring generated images the way the course does, picking the submission's settings, exporting it.

- :mod:`.scores`: :class:`MetricResult` (a number with what it was computed with) and the table that prints them;
- :mod:`.frechet`: FID (torchmetrics' Inception, optional) and the Fréchet distance in the VAE's latent space;
- :mod:`.clip_scores`: CLIP-T and CLIP-I as raw cosines (the course's way);
- :mod:`.metrics`: a folder scored against its references (:func:`score_folder`), sweeps, and the settings pick
  (:class:`Setting`, :func:`pick_settings`);
- :mod:`.evidence`: is a difference between two settings evidence? (:func:`paired_bootstrap` over the prompts);
- :mod:`.retrieval_judge`: the workbook's retrieval judge (not CLIP, not FID) for any captioned image set, trained
  here (:func:`ensure_retrieval_judge`), and whether a judge may rank settings at all (:func:`judge_can_rank`);
- :mod:`.export`: the submission itself (:func:`export_submission`, :func:`verify_submission`,
  :func:`zip_submission`, :func:`seed_for`, :func:`read_prompts`).
"""

from .clip_scores import ClipScorer, clip_i, clip_t, load_clip
from .evidence import Difference, paired_bootstrap
from .export import (SubmissionReport, contact_sheet, export_submission, generate_folder, read_prompt_file,
                     read_prompts, regenerate_one, seed_for, verify_submission, zip_submission)
from .frechet import fid, frechet_distance, frechet_distance_features, vae_frechet_distance
from .metrics import (PICK_METRICS, Setting, SettingsPick, SweepResult, examples_figure, generate_for_scoring,
                      generated_files, generated_pairs, load_reference_map, pick_metric, pick_settings, plot_sweep,
                      score_folder, sweep)
from .retrieval_judge import (RETRIEVAL_COSINE, RETRIEVAL_MODEL, RETRIEVAL_TOP1, RETRIEVAL_TOP5, RETRIEVAL_VERSION,
                              RetrievalJudge, RetrievalJudgeNet, ensure_retrieval_judge, judge_can_rank,
                              load_retrieval_judge, prompt_following, retrieval_judge_dir, retrieval_recipe,
                              text_features, train_retrieval_judge, validate_retrieval_judge, verdict_line)
from .scores import MetricResult, metrics_table, print_metrics

__all__ = ["ClipScorer", "clip_i", "clip_t", "load_clip", "SubmissionReport", "contact_sheet", "export_submission",
           "generate_folder", "read_prompt_file", "read_prompts", "regenerate_one", "seed_for", "verify_submission",
           "zip_submission", "fid", "frechet_distance", "frechet_distance_features", "vae_frechet_distance",
           "PICK_METRICS", "Setting", "SettingsPick", "SweepResult", "examples_figure", "generate_for_scoring",
           "generated_files", "generated_pairs", "load_reference_map", "pick_metric", "pick_settings", "plot_sweep",
           "score_folder", "sweep", "MetricResult", "metrics_table", "print_metrics", "Difference",
           "paired_bootstrap", "RETRIEVAL_COSINE", "RETRIEVAL_MODEL", "RETRIEVAL_TOP1", "RETRIEVAL_TOP5",
           "RETRIEVAL_VERSION", "RetrievalJudge", "RetrievalJudgeNet", "ensure_retrieval_judge", "judge_can_rank",
           "load_retrieval_judge", "retrieval_judge_dir", "retrieval_recipe", "text_features", "train_retrieval_judge",
           "validate_retrieval_judge", "verdict_line", "prompt_following"]
