"""assft_core.models: backbones, checkpoints, the scoring pass's hooks and source statistics.

Public API (ASSFT, METHOD.md §0–§1):
- `card.ModelCard` (+ `card_warnings`): the model card, `model_card.json` beside the weights.
- `loaded.load_model(dir_or_card, device=)`, `loaded.save_model(network, card, dir)`,
  `loaded.wrap_network(network, card)` → `LoadedModel` with `.scoring_pass` / `.infer`.
- `inference.predict_probs`, `inference.resolve_device`: sliding-window softmax.
- `source_stats.compute_source_stats`, `floored_source_var`; `assft stats` (commands.py).
- `registry.register_backbone` / `get_backbone`: "unet", "segresnet", "swin_unetr", "torchscript".
- `fingerprint.make_fingerprint` / `stale_fields`: what data and code made a checkpoint.

What MONAI's self-supervised Swin UNETR weights (`model_swinvit.pt`, `ssl_pretrained_weights.pth`)
give at round 0: encoder weights only. There is no trained head for your classes, so ASD is
unavailable and the round-0 query is DKD alone; Swin UNETR uses LayerNorm (no running
statistics), so without a statistics file KG ≡ 1 and DKD is diversity only. To do better: run
`assft stats --data DIR --checkpoint MODEL_DIR` over source-like scans you own (KG then measures
each case's distance from them), and label a first round; after fine-tuning the head exists and
ASD joins the query. MONAI's Swin UNETR forward needs the `einops` package.
"""
