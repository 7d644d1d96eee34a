"""Chapter 01: the data — records, the readers of every source, the data check, images, the held-out split.

- :mod:`.records`: :class:`Example`, :class:`TrainSet`, :class:`DataReport`, :class:`TestPrompt`, the caption rule
  (:func:`make_caption`) and the key rule (:func:`split_key`);
- :mod:`.readers`: :func:`load_train_set` / :func:`check_dataset` for the course format, an ``imagefolder`` and
  Hugging Face ``datasets`` sources (:mod:`.hf_datasets`), :func:`read_test_prompts`;
- :mod:`.images`: reading one image exactly as training and scoring do (:func:`load_image`; ``WHITE``, the
  background alpha is composited on);
- :mod:`.split`: the held-out split chapter 06 scores on (:func:`holdout_split`, :func:`choose_heldout`);
- :mod:`.errors`: :class:`DataError`, raised for bad input, naming the file and the fix.
"""

from .errors import DataError
from .images import (WHITE, ImageDataset, ImageFileError, content_bbox, crop_content, load_image, load_images,
                     pad_to_square, pil_to_tensor, tensor_to_pil, to_rgb)
from .readers import (check_dataset, detect_format, image_table, json_line_object, load_train_set, prompt_list,
                      read_metadata_jsonl, read_test_prompts, read_train_info)
from .records import DataReport, Example, Problem, TestPrompt, TrainSet, data_hash, make_caption, split_key
from .split import HeldOutSplit, choose_heldout, holdout_split, load_split, split_status

__all__ = ["DataError", "WHITE", "ImageDataset", "ImageFileError", "content_bbox", "crop_content", "load_image",
           "load_images", "pad_to_square", "pil_to_tensor", "tensor_to_pil", "to_rgb", "check_dataset",
           "detect_format", "image_table", "json_line_object", "load_train_set", "prompt_list",
           "read_metadata_jsonl", "read_test_prompts", "read_train_info", "DataReport", "Example", "Problem",
           "TestPrompt", "TrainSet", "data_hash", "make_caption", "split_key", "HeldOutSplit", "choose_heldout",
           "holdout_split", "load_split", "split_status"]
