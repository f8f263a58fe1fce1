"""Hub models without a network: a Hugging Face cache folder is built here, in huggingface_hub's on-disk layout
(models--ORG--NAME/blobs, snapshots/<sha>/, refs/<branch>, trees/<sha>.json), from tiny synthetic checkpoints in
each published layout, and loaded with HF_HUB_OFFLINE=1 through huggingface_hub's own snapshot_download.
Online-only behaviour (errors, the space check, upload) replaces HfApi's methods, the network boundary, only.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path

import pytest
import torch
import yaml
from helpers_layouts import outputs, randomized_tiny, save_mindspeed, to_diffusers

from flashi2v import FlashI2VError, FlashI2VTransformer
from flashi2v.hub import cache as hub_cache
from flashi2v.hub.plan import plan_repo
from flashi2v.hub.refs import HubRef, parse_model_ref
from flashi2v.hub.resolve import DEFAULT_COMPONENTS_REPO, resolve_model

TINY_HINTS = {"num_heads": 4, "text_len": 16}  # what a bare tiny weights file cannot tell (a config.json beside it)
REPO = "someone/FlashI2V-tiny"


# -- a Hugging Face cache, written the way huggingface_hub writes it ------------------------------------


def put_in_hub_cache(hub: Path, repo_id: str, files: dict[str, bytes], branch: str = "main", sha: str | None = None,
                     listed: dict[str, bytes] | None = None) -> str:
    """Store ``files`` (path in repo -> content) as one commit of ``repo_id``; ``listed``: files the cached tree
    listing names besides them (a download that stopped before they arrived). Returns the commit sha."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    sha = sha or hashlib.sha1((repo_id + branch + str(sorted(files))).encode()).hexdigest()
    tree = {}
    for rel, data in {**files, **(listed or {})}.items():
        tree[rel] = {"size": len(data), "blob_id": hashlib.sha1(data).hexdigest()}
        if rel not in files:
            continue
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / sha / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(sha)
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{sha}.json").write_text(json.dumps({"format_version": 1, "files": tree}))
    return sha


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def st_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """HF_HUB_CACHE and FLASHI2V_CACHE in tmp_path, offline."""
    hub, converted = tmp_path / "hf-hub", tmp_path / "flashi2v-cache"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("FLASHI2V_CACHE", str(converted))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FLASHI2V_COMPONENTS_REPO", raising=False)
    return types.SimpleNamespace(hub=hub, converted=converted)


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> dict[str, bytes]:
    """vae/, text_encoder/, tokenizer/ of a tiny Wan-like pipeline: the companion repository's files."""
    from flashi2v.random_components import random_tiny_pipeline

    folder = tmp_path_factory.mktemp("components")
    pipe = random_tiny_pipeline(seed=0)
    pipe.vae.save_pretrained(folder / "vae")
    pipe.text_encoder.save_pretrained(folder / "text_encoder", folder / "tokenizer")
    return folder_files(folder)


def source_files(kind: str, model, tmp_path) -> dict[str, bytes]:
    """The transformer ``model`` as a Hub repository of the given published layout would hold it."""
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
    backbone = {k: v for k, v in ours.items() if not k.startswith(("fourier_embedding.", "learnable_proj."))}
    hints = json.dumps(TINY_HINTS).encode()
    if kind == "mindspeed":  # the released flashi2v_1_3B.pt, a Megatron container
        save_mindspeed(tmp_path / "ms.pt", ours)
        return {"flashi2v_1_3B.pt": (tmp_path / "ms.pt").read_bytes(), "config.json": hints, "README.md": b"# x"}
    if kind == "gpu-branch":  # the authors' GPU-branch iteration folder
        torch.save(ours, tmp_path / "raw.pt")
        return {"iter_000100/model_state_dict.pt": (tmp_path / "raw.pt").read_bytes(),
                "iter_000100/config.json": hints}
    if kind == "wan-original":  # Wan2.1 T2V, original names, no VAE / umT5 files: the companion supplies them
        return {"diffusion_pytorch_model.safetensors": st_bytes(backbone),
                "config.json": json.dumps({"dim": 64, **TINY_HINTS}).encode()}
    if kind == "diffusers":  # a -Diffusers pipeline repository: transformer/ plus its own components
        config = {"_class_name": "WanTransformer3DModel", "num_attention_heads": 4, "attention_head_dim": 16,
                  "text_len": 16}  # the real one leaves text_len at its default, 512
        return {"transformer/diffusion_pytorch_model.safetensors": st_bytes(to_diffusers(ours)),
                "transformer/config.json": json.dumps(config).encode(), "model_index.json": b"{}"}
    raise AssertionError(kind)


def _companion(hub: Path, components: dict[str, bytes], repo: str = DEFAULT_COMPONENTS_REPO) -> str:
    return put_in_hub_cache(hub, repo, {**components, "transformer/config.json": b"{}", "README.md": b"# Wan"},
                            listed={"transformer/diffusion_pytorch_model.safetensors": b"not downloaded"})


# -- references --------------------------------------------------------------------------------------


def test_references_tell_folders_from_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "run1").mkdir(parents=True)
    assert parse_model_ref("builtin") == "builtin"
    assert parse_model_ref("outputs/run1") == Path("outputs/run1")  # exists: the folder, never the Hub
    assert parse_model_ref("./org/name") == Path("org/name") and parse_model_ref("~/m") == Path("~/m").expanduser()
    assert parse_model_ref(Path("org/name")) == Path("org/name")  # a Path object is a path
    assert parse_model_ref("a/b/c") == Path("a/b/c")  # three parts: not a repository id
    assert parse_model_ref("yunyangge/FlashI2V-1.3B") == HubRef("yunyangge/FlashI2V-1.3B")
    assert parse_model_ref("org/name@v1.0") == HubRef("org/name", "v1.0")
    assert parse_model_ref("hf://org/name@dev/npu/w.pt") == HubRef("org/name", "dev", "npu/w.pt", explicit=True)
    assert parse_model_ref("hf://outputs/run1") == HubRef("outputs/run1", explicit=True)  # hf:// is always the Hub
    with pytest.raises(FlashI2VError, match="hf://ORG/NAME"):
        parse_model_ref("hf://just-a-name")


def test_plan_picks_only_the_model_files():
    plan = plan_repo({"flashi2v_1_3B.pt": 5, "README.md": 1, "assets/demo.mp4": 9}, "o/n")
    assert plan.kind == "weights-file" and plan.files({"flashi2v_1_3B.pt": 5, "assets/demo.mp4": 9}) == ["flashi2v_1_3B.pt"]
    assert plan.missing == ["vae", "text_encoder", "tokenizer"]
    wan = plan_repo({"diffusion_pytorch_model.safetensors": 1, "Wan2.1_VAE.pth": 1, "google/umt5-xxl/spiece.model": 1,
                     "models_t5_umt5-xxl-enc-bf16.pth": 1, "examples/i2v.png": 1}, "o/n")
    assert wan.kind == "wan-original" and wan.missing == [] and wan.components["vae"] == "Wan2.1_VAE.pth"
    with pytest.raises(FlashI2VError, match=r"several weights .*hf://o/n/gpu/a.safetensors"):
        plan_repo({"npu/flashi2v_1_3B.pt": 1, "gpu/a.safetensors": 1}, "o/n")
    assert plan_repo({"npu/flashi2v_1_3B.pt": 1, "gpu/a.safetensors": 1}, "o/n", "npu").transformer == "npu/flashi2v_1_3B.pt"
    with pytest.raises(FlashI2VError, match="holds no model weights"):
        plan_repo({"README.md": 1}, "o/n")


# -- each published layout, offline, converted once --------------------------------------------------


@pytest.mark.parametrize("kind", ["mindspeed", "gpu-branch", "wan-original", "diffusers"])
def test_each_layout_loads_offline_and_converts_once(kind, caches, components, tmp_path, capsys):
    t2v = kind in ("wan-original", "diffusers")
    source = randomized_tiny(seed=7, proj_kernel="3x3x3" if kind == "mindspeed" else "1x3x3", t2v=t2v)
    files = source_files(kind, source, tmp_path)
    if kind == "diffusers":
        files.update(components)  # a pipeline repository carries its own components
    else:
        _companion(caches.hub, components)
    sha = put_in_hub_cache(caches.hub, REPO, files)

    folder = resolve_model(REPO)
    assert folder == caches.converted / f"{REPO.replace('/', '--')}--{sha}" / "model"
    assert "converting" in capsys.readouterr().err
    for ours, theirs in zip(outputs(FlashI2VTransformer.from_pretrained(folder / "transformer")), outputs(source)):
        assert torch.equal(ours, theirs)
    record = json.loads((folder.parent / "entry.json").read_text())
    assert record["sha"] == sha and record["components_repo"] == (None if kind == "diffusers" else DEFAULT_COMPONENTS_REPO)
    for name in ("vae", "text_encoder", "tokenizer"):
        assert (folder / name).is_dir()
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").stat().st_nlink > 1  # linked to the download

    # The second load uses the converted entry: it works with the download gone, and converts nothing.
    for snapshot_file in (caches.hub / f"models--{REPO.replace('/', '--')}" / "snapshots" / sha).rglob("*"):
        if snapshot_file.is_file():
            snapshot_file.unlink()
    assert resolve_model(REPO) == folder
    assert "converting" not in capsys.readouterr().err


def test_pipeline_runs_a_hub_model_and_revision_pins_its_commit(caches, components, tmp_path):
    from flashi2v import FlashI2VPipeline

    _companion(caches.hub, components)
    v1 = randomized_tiny(seed=1, proj_kernel="3x3x3")
    v2 = randomized_tiny(seed=2, proj_kernel="3x3x3")
    sha1 = put_in_hub_cache(caches.hub, REPO, source_files("mindspeed", v1, tmp_path), branch="v1")
    put_in_hub_cache(caches.hub, REPO, source_files("mindspeed", v2, tmp_path), branch="main")
    pipe = FlashI2VPipeline.from_pretrained(REPO + "@v1")
    assert torch.equal(outputs(pipe.transformer)[0], outputs(v1)[0])
    assert torch.equal(outputs(FlashI2VPipeline.from_pretrained(REPO).transformer)[0], outputs(v2)[0])
    assert torch.equal(outputs(FlashI2VPipeline.from_pretrained(f"{REPO}@{sha1}").transformer)[0], outputs(v1)[0])
    out = pipe(torch.zeros(3, 32, 32), "a cat", num_frames=5, height=32, width=32, steps=1, seed=0, progress=False)
    assert out.frames.shape == (5, 32, 32, 3)


def test_processes_starting_together_convert_once(caches, components, tmp_path, capsys):
    """torchrun starts one process per GPU, each loading the model: one converts, the others wait and reuse."""
    from concurrent.futures import ThreadPoolExecutor

    _companion(caches.hub, components)
    put_in_hub_cache(caches.hub, REPO, source_files("mindspeed", randomized_tiny(seed=8, proj_kernel="3x3x3"), tmp_path))
    with ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda _: resolve_model(REPO), range(3)))
    assert len(set(folders)) == 1 and hub_cache.entry_problem(folders[0].parent) is None
    assert capsys.readouterr().err.count("converting") == 1


def test_damaged_or_unfinished_entry_is_rebuilt(caches, components, tmp_path, capsys):
    _companion(caches.hub, components)
    source = randomized_tiny(seed=3, proj_kernel="3x3x3")
    put_in_hub_cache(caches.hub, REPO, source_files("mindspeed", source, tmp_path))
    folder = resolve_model(REPO)
    weights = folder / "transformer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])  # truncated: same names, wrong size
    capsys.readouterr()
    assert resolve_model(REPO) == folder
    assert "damaged (model/transformer/model.safetensors has" in capsys.readouterr().err
    assert torch.equal(outputs(FlashI2VTransformer.from_pretrained(folder / "transformer"))[0], outputs(source)[0])

    (folder.parent / "entry.json").unlink()  # as if the build stopped before it finished
    assert resolve_model(REPO) == folder
    assert "damaged (no entry.json" in capsys.readouterr().err
    assert hub_cache.entry_problem(folder.parent) is None


def test_our_own_folder_is_used_from_the_download(caches, components, make_tiny_pipeline, tmp_path):
    pipe = make_tiny_pipeline(seed=4)
    pipe.save_pretrained(tmp_path / "mine")
    sha = put_in_hub_cache(caches.hub, REPO, folder_files(tmp_path / "mine"))
    folder = resolve_model(REPO)
    assert folder == caches.hub / f"models--{REPO.replace('/', '--')}" / "snapshots" / sha  # nothing converted
    assert not caches.converted.exists()

    # Only the transformer uploaded: the companion's components are linked in beside it, once.
    _companion(caches.hub, components)
    other = "someone/transformer-only"
    put_in_hub_cache(caches.hub, other, folder_files(tmp_path / "mine" / "transformer", "transformer/") |
                     {"pipeline.json": (tmp_path / "mine" / "pipeline.json").read_bytes()})
    assembled = resolve_model(other)
    assert assembled.parent.parent == caches.converted
    assert (assembled / "pipeline.json").is_file() and (assembled / "vae").is_dir()
    blob = assembled / "vae" / "diffusion_pytorch_model.safetensors"
    assert blob.stat().st_nlink > 1  # a hard link to the download's blob, not a second copy
    assert torch.equal(outputs(FlashI2VTransformer.from_pretrained(assembled / "transformer"))[0],
                       outputs(pipe.transformer)[0])


# -- one-line errors -----------------------------------------------------------------------------------


def test_offline_and_not_cached_names_both_readings(caches):
    with pytest.raises(FlashI2VError, match=r"^'outputs/x' is no folder here, and the Hub model outputs/x is not in the "
                                            r"Hugging Face cache .*HF_HUB_OFFLINE.*check the folder path$") as err:
        resolve_model("outputs/x")
    assert "\n" not in str(err.value)
    with pytest.raises(FlashI2VError, match=r"^the Hub model someone/FlashI2V-tiny@no-such-branch is not in the "
                                            r"Hugging Face cache .*to download it once$"):
        resolve_model(REPO + "@no-such-branch")


def test_interrupted_download_is_reported_not_used(caches, components, tmp_path):
    _companion(caches.hub, components)
    files = source_files("mindspeed", randomized_tiny(seed=5, proj_kernel="3x3x3"), tmp_path)
    weights = files.pop("flashi2v_1_3B.pt")
    put_in_hub_cache(caches.hub, REPO, files, listed={"flashi2v_1_3B.pt": weights})  # the big file never arrived
    with pytest.raises(FlashI2VError, match="incomplete in the cache .*connect and run again"):
        resolve_model(REPO)
    assert hub_cache.cached_models(caches.converted) == [] and hub_cache.leftovers(caches.converted) == []


def _http_error(cls, status: int):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    return cls("boom", response=response)


@pytest.fixture
def online(caches, monkeypatch):
    """Not offline; HfApi is replaced where it would talk to the network."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return caches


@pytest.mark.parametrize("error, message", [
    ("GatedRepoError", "gated repository: accept its terms"),
    ("RepositoryNotFoundError", r"^'someone/FlashI2V-tiny' is no folder here, and no Hub model repository"),
    ("RevisionNotFoundError", "has no revision 'nope'"),
])
def test_hub_errors_are_one_line(error, message, online, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub import errors as e

    def model_info(self, repo_id, **kwargs):
        raise _http_error(getattr(e, error), 404)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    with pytest.raises(FlashI2VError, match=message) as err:
        resolve_model(REPO + ("@nope" if error == "RevisionNotFoundError" else ""))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("raised, message", [
    (lambda e, httpx2: httpx2.ReadError("connection reset by peer"), "was interrupted .* run again; files already"),
    (lambda e, httpx2: e.XetDownloadError("chunk fetch failed"), "was interrupted .* the download resumes"),
    (lambda e, httpx2: _http_error(e.HfHubHTTPError, 503), r"failed \(boom\): run again"),
    (lambda e, httpx2: _http_error(e.HfHubHTTPError, 401), r"refused access .*\(HTTP 401\): log in"),
    (lambda e, httpx2: e.LocalTokenNotFoundError("no token"), "needs a Hugging Face token .*hf auth login"),
])
def test_download_failures_are_one_line_that_says_what_to_do(raised, message):
    import httpx2
    from huggingface_hub import errors as e

    from flashi2v.hub.resolve import hub_errors

    with pytest.raises(FlashI2VError, match=message) as err:
        with hub_errors(HubRef(REPO)):
            raise raised(e, httpx2)
    assert "\n" not in str(err.value) and REPO in str(err.value)


def test_no_network_is_one_line_that_suggests_offline_mode(online, monkeypatch):
    import httpx2
    from huggingface_hub import HfApi

    def model_info(self, repo_id, **kwargs):
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", model_info)
    with pytest.raises(FlashI2VError, match=r"^'someone/FlashI2V-tiny' is no folder here, and the Hugging Face Hub "
                                            r"cannot be reached .*the folder path, the connection .*HF_HUB_OFFLINE=1"):
        resolve_model(REPO)


def test_the_size_to_come_and_the_free_space_are_said_first(caches, components, capsys):
    from flashi2v.hub.resolve import HubModel

    sha = _companion(caches.hub, components)
    # vae/config.json is in the cache already (not counted); transformer/ is not asked for.
    listing = {"vae/config.json": 10**9, "text_encoder/big.safetensors": 3 * 2**30, "transformer/x": 10**12}
    model = HubModel(HubRef(DEFAULT_COMPONENTS_REPO), DEFAULT_COMPONENTS_REPO)
    model.check_space([(HubRef(DEFAULT_COMPONENTS_REPO), ["vae/*", "text_encoder/*"], listing, sha)], 0)
    err = capsys.readouterr().err
    assert f"downloading 3.0 GB from {DEFAULT_COMPONENTS_REPO} into {caches.hub} (" in err and " free)" in err


def test_download_that_cannot_fit_is_refused_before_it_starts(online, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def model_info(self, repo_id, revision=None, files_metadata=False, **kwargs):
        calls.append(repo_id)
        size = 2**60 if repo_id == REPO else 1000  # an exabyte of weights
        files = {"flashi2v_1_3B.pt": size} if repo_id == REPO else {"vae/config.json": 9, "text_encoder/a": 9,
                                                                   "tokenizer/b": 9}
        return types.SimpleNamespace(sha="a" * 40, siblings=[types.SimpleNamespace(rfilename=f, size=s)
                                                             for f, s in files.items()])

    monkeypatch.setattr(HfApi, "model_info", model_info)
    with pytest.raises(FlashI2VError, match=r"needs [\d.]+ TB on the disk of .* \(download [\d.]+ TB, conversion "
                                            r"[\d.]+ TB\) but only .* is free: free some space"):
        resolve_model(REPO)
    assert calls == [REPO, DEFAULT_COMPONENTS_REPO]
    assert not (online.hub / f"models--{REPO.replace('/', '--')}").exists()  # nothing downloaded


# -- upload --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub_api(monkeypatch):
    """HfApi.create_repo / create_commit record their arguments instead of calling the Hub."""
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: calls.setdefault(
        "commit", (repo_id, list(operations), kw)) and types.SimpleNamespace(commit_url=f"https://hf.co/{repo_id}/c/1"))
    return calls


def _card(operations) -> tuple[dict, str]:
    card = next(op for op in operations if op.path_in_repo == "README.md").path_or_fileobj
    text = card.read().decode() if hasattr(card, "read") else bytes(card).decode()
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_save_pretrained_pushes_the_folder_with_a_model_card(fake_hub_api, make_tiny_pipeline, tmp_path):
    pipe = make_tiny_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "mine", push_to_hub=True, repo_id="me/my-i2v", private=True,
                         training_data="2,000 synthetic camera-motion clips")
    repo_id, kwargs = fake_hub_api["repo"]
    assert repo_id == "me/my-i2v" and kwargs["private"] is True and kwargs["exist_ok"] is True
    _, operations, _ = fake_hub_api["commit"]
    uploaded = {op.path_in_repo for op in operations}
    assert uploaded == set(folder_files(tmp_path / "mine")) | {"README.md"}
    assert not (tmp_path / "mine" / "README.md").exists()  # the folder itself is not modified
    meta, body = _card(operations)
    assert meta["pipeline_tag"] == "image-to-video" and meta["library_name"] == "flashi2v"
    assert meta["flashi2v"]["paradigm"] == pipe.transformer.config.paradigm
    assert meta["flashi2v"]["config"]["dim"] == pipe.transformer.config.dim
    assert meta["flashi2v"]["training_data"] == "2,000 synthetic camera-motion clips"
    assert "--model me/my-i2v" in body


def test_upload_command_and_its_errors(fake_hub_api, make_tiny_pipeline, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi

    from flashi2v.cli import main

    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, branch, exist_ok=False:
                        fake_hub_api.setdefault("branch", branch), raising=False)
    make_tiny_pipeline(seed=0).save_pretrained(tmp_path / "mine")
    (tmp_path / "mine" / "README.md").write_text("# my own card\n")
    assert main(["upload", str(tmp_path / "mine"), "me/mine", "--revision", "dev"]) == 0
    _, operations, kwargs = fake_hub_api["commit"]
    assert kwargs["revision"] == "dev" and fake_hub_api["branch"] == "dev"
    readme = next(op for op in operations if op.path_in_repo == "README.md")
    assert Path(readme.path_or_fileobj).read_text() == "# my own card\n"  # theirs, not a generated one
    assert main(["upload", str(tmp_path / "mine"), "not-a-repo-id"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
    assert main(["upload", str(tmp_path), "me/x"]) == 2
    assert "has no transformer/config.json" in capsys.readouterr().err


# -- cache list / clear, --model on the command line ------------------------------------------------------


def test_cache_list_and_clear(caches, components, tmp_path, capsys):
    from flashi2v.cli import main

    _companion(caches.hub, components)
    put_in_hub_cache(caches.hub, REPO, source_files("mindspeed", randomized_tiny(seed=6, proj_kernel="3x3x3"), tmp_path))
    folder = resolve_model(REPO)
    (caches.converted / ".x--y--z.partial-1234abcd").mkdir()  # an interrupted build
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert REPO in listing and " ok " in listing and "1 unfinished build" in listing
    assert main(["cache", "clear", "other/repo"]) == 2
    assert folder.exists()
    assert main(["cache", "clear", "--downloads"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 converted model(s) and 1 unfinished build(s)" in out
    assert not any(caches.converted.iterdir())  # entries, unfinished builds and their lock files
    assert not (caches.hub / f"models--{REPO.replace('/', '--')}").exists()
    assert (caches.hub / f"models--{DEFAULT_COMPONENTS_REPO.replace('/', '--')}").exists()  # may be shared: kept
    assert f"kept the download of {DEFAULT_COMPONENTS_REPO}" in out


def test_generate_with_an_uncached_hub_model_offline_is_one_line(caches, example_image, tmp_path, capsys):
    from flashi2v.cli import main

    code = main(["generate", "--image", example_image, "--prompt", "x", "--model", "nobody/nothing",
                 "--out", str(tmp_path / "v.mp4"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "the Hub model nobody/nothing is not in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err
