"""Display names of the peers in tables and figures (imports nothing: scripts that must not load torch read it)."""

PEER_LABELS = {
    "erm": "ERM (no augmentation)",
    "torchstain-macenko": "Macenko normalisation (torchstain)",
    "torchstain-reinhard": "Reinhard normalisation (torchstain)",
    "hestain-preset": "HEStain presets (albumentations)",
    "hed-light": "HED jitter, light (Tellez)",
    "hed-strong": "HED jitter, strong (Tellez)",
    "randstainna": "RandStainNA",
    "rgb-meanstd": "RGB mean/std transfer (Colorist)",
    "kornia-colorjitter": "ColorJitter (kornia)",
    "kornia-colorjitter-strong": "ColorJitter, strong (kornia; 0.4, 0.4, 0.4, 0.1)",
    "hed-strong-bc": "HED jitter strong + brightness/contrast",
}
