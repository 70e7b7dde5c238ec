"""assft_core.data: NIfTI IO, label resampling, integrity checks, dataset import, preprocessing.

Modules: `io` (Volume, load_image, load_label, save_label), `grid` (resample_label_to_grid),
`integrity` (check_image, check_pair, check_dataset), `importers` (import_dataset),
`preprocess` (preprocess_case, preprocess_image, invert_label), `case_cache` (load_case: the
project's compact cache, float16 images), `stream` (LazyCases), `commands` (`assft validate`).
"""
