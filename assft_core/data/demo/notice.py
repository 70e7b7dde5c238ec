"""Texts shipped inside every demo corpus: the McGill ICBM152 notice and the corpus README.

The McGill licence allows any use provided its copyright notice appears in all copies, so both
files carry it (DATA.md).
"""

from __future__ import annotations

MCGILL_NOTICE = """\
The anatomy of this corpus is derived from the MNI ICBM152 non-linear symmetric 2009a template
(T1, grey and white matter probability maps, brain mask), as distributed with nilearn.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References: V.S. Fonov, A.C. Evans, K. Botteron, C.R. Almli, R.C. McKinstry, D.L. Collins and BDCG,
"Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54(1), 2011.
V.S. Fonov, A.C. Evans, R.C. McKinstry, C.R. Almli and D.L. Collins, "Unbiased nonlinear average
age-appropriate brain templates from birth to adulthood", NeuroImage 47, Supplement 1, S102, 2009."""

_README = """\
ASSFT Studio demo corpus (nnU-Net v2 raw layout)
================================================

Built by `assft demo build` with: {params}

What is real and what is simulated
----------------------------------
REAL: the anatomy. One template brain, MNI ICBM152 2009a at 2 mm (skull-stripped T1, grey and
white matter probability maps, brain mask), from nilearn.
DERIVED: the labels, 0 background, 1 CSF, 2 grey matter, 3 white matter. Inside the brain mask:
grey or white matter by the larger probability when it is >= 0.3; CSF where both probabilities are
< 0.3 AND the T1 is dark (0.1 <= T1 < 0.45, darker than any grey matter) - ventricles, fissures
and sulci, not the faded rim of the mask; everything else background. See preview.png.
SIMULATED: the subjects and the scanners. Each case is the template warped by a random affine
(rotation <= 4 deg per axis, scale +-8 %, shift <= 4 mm) and a smooth elastic field (control-point
displacements of sd 2 mm), the label warped identically (nearest neighbour), then imaged at a site:
  source  plain T1, little noise                       (pre-training only)
  A       T1 with a strong bias field and noise        (dominant site of the unbalanced pool)
  B       T2-like inverted contrast, CSF > GM > WM     (still stored as channel 0 "T1")
  C       3x thick slices through-plane (Z), blurred   (stored with the thick spacing)
  D       low contrast, gamma and heavy noise          (rarest site of the unbalanced pool)
Noise is Rician; intensities are int16 with a random gain per case. These are not patients: use
the corpus to learn and test the tool, never to judge a method's clinical accuracy.

Splits (cases.csv: case_id, site, split)
----------------------------------------
source_train / source_test: source site, for pre-training and its held-out check only.
pool: the target cases active learning may query. test: balanced over A-D, never queried.
Every case has a label in labelsTr/: the demo's ground truth plays the expert annotator.

{counts}

Licence of the anatomy
----------------------
{notice}
"""


def readme_text(params: dict[str, object], counts: str) -> str:
    """The corpus README.txt: provenance, the CSF rule, the sites, the splits, the McGill notice.

    Args:
        params: the build's parameters (layout, seed, size, version).
        counts: a pre-formatted table of cases per site and split.
    """
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return _README.format(params=shown, counts=counts, notice=MCGILL_NOTICE)
