"""Which model a round uses: f_0 from a model folder or a card file, f_t from the latest trained round."""

from __future__ import annotations

import shutil
from pathlib import Path

from assft_core.models.card import CARD_FILE, ModelCard
from assft_core.models.loaded import load_model
from assft_core.session import rounds, store, workspace
from assft_core.session.project import create_project

from engine_factories import engine_config


def test_card_file_project_resolves_the_checkpoint_beside_the_users_card(
    tmp_path: Path, tiny_demo_corpus: Path, tiny_model_dir: Path
) -> None:
    user = tmp_path / "user_model"
    shutil.copytree(tiny_model_dir, user)
    project = create_project(tmp_path / "proj", tiny_demo_corpus, user / CARD_FILE, config=engine_config(), oracle=True)
    ref = workspace.base_model(project)
    assert ref.tag == "f0" and ref.path.is_relative_to(project.artifacts)
    card = ModelCard.load(ref.path)
    assert Path(card.checkpoint) == user / "model.pt"  # the frozen copy names the user's weights
    assert load_model(ref.path, device="cpu").report.matched
    key = workspace.model_key(ref)
    (user / "model.pt").write_bytes(b"changed")  # a changed checkpoint never reuses cached scores
    assert workspace.model_key(ref) != key


def test_model_for_round_is_the_latest_earlier_checkpoint(fresh_project) -> None:
    project = fresh_project
    assert workspace.model_for_round(project, 0).tag == "f0"
    with store.transaction(project.db) as conn:
        conn.execute("UPDATE rounds SET state = 'evaluated', checkpoint = ? WHERE idx = 0",
                     ("artifacts/models/round-000",))
    rounds.start_next_round(project)
    ref = workspace.model_for_round(project, 1)
    assert ref.tag == "round1" and ref.path == project.artifacts / "models" / "round-000"
    assert workspace.model_for_round(project, 0).tag == "f0"
