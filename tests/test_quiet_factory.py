"""Hugging Face's progress bars and advice stay out of a run's output while the driver calls the workload factory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.workloads.quiet import quiet_hugging_face

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parent.parent
BAR_TEXT = ("Loading", "it/s", "%|")


def bert_from_folder(folder: str) -> str:
    """A workload factory as a user writes one: ``from_pretrained`` of a saved model, which draws transformers'
    "Loading weights" bar. It returns no workload, so a run stops right after the call with one line."""
    transformers.BertModel.from_pretrained(folder)
    return "not a workload"


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_the_factory_draws_a_bar_where_nothing_silences_it(bert_folder, capfd):
    """The control for the test below: this transformers draws the bar (so its absence there means something)."""
    capfd.readouterr()
    bert_from_folder(str(bert_folder))
    assert "Loading weights" in capfd.readouterr().err


def test_no_bar_reaches_the_output_of_python_m_search(bert_folder, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "search", "~workload",
                           f"+workload._target_={__name__}.bert_from_folder", f"+workload.folder={bert_folder}",
                           f"results_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "expected search.workloads.Workload" in proc.stderr, "the factory ran, and the run stopped after it"
    assert not [t for t in BAR_TEXT if t in proc.stderr + proc.stdout], proc.stderr
    assert proc.stderr.count("\n") == 1


def test_the_previous_settings_come_back_after_the_block():
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    def state() -> tuple[bool, int, bool, int]:
        return (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity(), hub.are_progress_bars_disabled(),
                hub.logging.get_verbosity())

    before = state()
    with quiet_hugging_face():
        assert state() == (False, hf_logging.ERROR, True, hub.logging.ERROR)
    assert state() == before
    hf_logging.disable_progress_bar()  # a user who turned the bars off keeps them off
    try:
        with quiet_hugging_face():
            pass
        assert not hf_logging.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
    finally:
        hf_logging.enable_progress_bar()
        if before[2]:  # as it was
            hub.disable_progress_bars()


def test_only_a_factory_that_uses_hugging_face_pays_for_importing_it():
    """Importing transformers costs most of a second: the digits workload does not use it and does not pay; the
    text workload's module imports it inside its functions, which its source shows before anything runs."""
    code = ("import sys; from search.workloads.quiet import quiet_hugging_face, uses_hugging_face\n"
            "with quiet_hugging_face('search.workloads.digits.load'): pass\n"
            "print(uses_hugging_face('search.workloads.digits.load'), uses_hugging_face('search.workloads.text.load'),"
            " sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'huggingface_hub')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False True []"
