"""The offline wing: what lets every chapter run on a laptop with no download — a generated data set of pixel-art
monsters, a small VAE trained on the data at hand, and a judge that knows the demo's colours and shapes.

- :mod:`.species`: the demo's words (colours, shapes, features, actions) and its species;
- :mod:`.sprites`: the rasteriser (:func:`render_sprite`); :mod:`.dataset`: the data set in the course format
  (:func:`ensure_demo_dataset`);
- :mod:`.vae`: the demo stack's ``AutoencoderKL``, trained on any data set (:func:`ensure_demo_vae`);
- :mod:`.judge`: the demo judge (colour / shape / species adherence); :mod:`.colour_check`: the colour a prompt names
  and the colour a sprite shows.

Only :mod:`helpers.profiles` (which decides course vs demo) and the chapters import this wing; the chapter packages
never do.
"""

from .colour_check import colour_prompts, named_colour
from .dataset import demo_test_pairs, ensure_demo_dataset, make_demo_dataset
from .judge import DemoJudge, ensure_judge, judge_folder, load_judge, prompt_labels, train_judge
from .species import ACTIONS, COLOURS, SHAPES, Species, demo_species, species_table
from .sprites import render_sprite
from .vae import DEMO_VAE_CONFIG, demo_vae_dir, ensure_demo_vae, read_report, train_demo_vae

__all__ = ["colour_prompts", "named_colour", "demo_test_pairs", "ensure_demo_dataset",
           "make_demo_dataset", "DemoJudge", "ensure_judge", "judge_folder", "load_judge", "prompt_labels",
           "train_judge", "ACTIONS", "COLOURS", "SHAPES", "Species", "demo_species", "species_table",
           "render_sprite", "DEMO_VAE_CONFIG", "demo_vae_dir", "ensure_demo_vae", "read_report", "train_demo_vae"]
