"""The words the dashboard uses, each defined once in plain words (shown by `app.ui.words_used_here`).

Pages say things in plain words first and put a symbol in brackets; this is where each symbol and
each term of the field is explained. No Streamlit here, so the list is tested as data.
"""

from __future__ import annotations

from assft_core.session.workspace import model_name, model_symbol

# (term as pages write it, what it means), in the order a user meets them in a round.
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("Round", "One pass of the loop: score the unlabelled scans, pick a few, label them, fine-tune the model, "
              "evaluate it. Rounds are numbered from 0."),
    (model_name(0).capitalize(), "The model the project started from, before any fine-tuning."),
    (f"Fine-tuned model ({model_symbol(1)}, {model_symbol(2)}, …)",
     f"The model after fine-tuning: round 0 makes the {model_name(1)}, round 1 the {model_name(2)}, and so on. "
     "fₜ is the model after t rounds."),
    ("Budget", "How many scans you will label in a round."),
    ("Pick (query)", "A scan the strategy proposes for labelling; you approve, reject or swap it. "
                     "Querying is proposing the round's picks."),
    ("Strategy", "The rule that ranks the unlabelled scans and proposes the picks (e.g. assft, random)."),
    ("KG (knowledge gap)", "How far a scan's image statistics sit from the images the model learned from: "
                           "a high KG means the scan looks new to the model."),
    ("DIV (diversity)", "How different a scan is from the most similar case already labelled or picked "
                        "(a distance between the model's summaries of the two scans)."),
    ("DKD", "KG and diversity combined: scans that are both new to the model and unlike the cases already chosen."),
    ("ASD (segmentation difficulty)", "How unsure the model is of its outline: its uncertainty (entropy) inside "
                                      "the predicted anatomy only."),
    ("Foreground", "Every class except the background: the anatomy being segmented."),
    ("Dice", "Overlap between a predicted outline and the reference label: 0 = none, 1 = identical. "
             "Shown with 3 decimals; the mean is over foreground classes."),
    ("HD95", "How far the predicted outline strays from the reference, in mm (95th percentile of the boundary "
             "distances; lower is better). A structure the model misses entirely is counted apart."),
    ("Spacing", "The size of one voxel in mm along each axis; images are resampled to the model's spacing."),
    ("SSFT", "Selective semi-supervised fine-tuning: after training on the labelled scans, training continues "
             "with the unlabelled scans whose pseudo-labels look reliable."),
    ("Pseudo-label", "The model's own prediction used as a label for an unlabelled scan; voxels the model is "
                     "unsure of are ignored."),
    ("R", "The unlabelled scans trusted for pseudo-labels in a round's SSFT phase (chosen by confidence and "
          "closeness to the labelled scans)."),
    ("Retention recipe", "How fine-tuning keeps what the pre-trained model already did well on other sites "
                         "(e.g. adabn + wise); 'paper' means no retention."),
    ("Site", "Where a scan comes from (hospital, scanner or protocol); results are shown per site because "
             "fine-tuning on some sites can make others worse."),
)


def glossary_markdown() -> str:
    """The glossary as one Markdown list: "- **term**: meaning" per line, in `GLOSSARY` order."""
    return "\n".join(f"- **{term}**: {meaning}" for term, meaning in GLOSSARY)
