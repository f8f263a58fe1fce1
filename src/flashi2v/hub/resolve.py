"""A model reference -> a local pipeline folder: download through huggingface_hub, convert once, reuse.

1. List the repository's files (online: ``HfApi.model_info(files_metadata=True)``, with sizes; offline: the
   listing huggingface_hub cached with the download) and plan what to fetch (``plan.plan_repo``).
2. A complete converted entry for this commit exists: use it (no download at all).
3. Our own complete folder: download it and load the snapshot as it is.
4. Otherwise check the download and the conversion fit on the disk, download the weights and (when the
   repository lacks them) the VAE / text encoder / tokenizer from the companion repository, and convert
   into the cache (``cache.py``) through ``flashi2v.weights.convert_checkpoint``.
Every huggingface_hub failure becomes one FlashI2VError line that says what to do.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import FlashI2VError
from ..outputs import staged_folder
from ..sizes import format_size
from . import cache
from .plan import RepoPlan, companion_patterns, download_size, plan_repo
from .refs import BUILTIN, HubRef, parse_model_ref

DEFAULT_COMPONENTS_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
# Converting a transformer writes about its own size again; this margin covers configs, tokenizer, rounding.
_SPACE_MARGIN = 256 * 2**20


def components_repo_default() -> str:
    return os.environ.get("FLASHI2V_COMPONENTS_REPO") or DEFAULT_COMPONENTS_REPO


def _note(text: str) -> None:
    print(f"flashi2v: {text}", file=sys.stderr)


def resolve_model(ref: str | os.PathLike, components_repo: str | None = None, token: str | bool | None = None) -> Path:
    """The local pipeline folder for ``ref``: ``builtin``, a folder (returned as it is), or a Hub repository
    ``ORG/NAME[@REVISION]`` / ``hf://ORG/NAME[@REVISION][/PATH]``. ``components_repo``: where a repository
    without VAE / text encoder / tokenizer gets them (default ``$FLASHI2V_COMPONENTS_REPO`` or
    Wan-AI/Wan2.1-T2V-1.3B-Diffusers). ``token``: as huggingface_hub takes it (default: HF_TOKEN or the
    stored login)."""
    parsed = parse_model_ref(ref)
    if parsed == BUILTIN:
        from ..builtin import builtin_path

        return builtin_path()
    if isinstance(parsed, Path):
        return parsed
    return HubModel(parsed, components_repo or components_repo_default(), token).folder()


# -- huggingface_hub's errors as one line each --------------------------------------------------------


def _folder_too(ref: HubRef) -> str:
    """For a plain ORG/NAME that could also have meant a folder: the start of a message naming both readings."""
    if ref.explicit or ref.revision or ref.subpath:
        return ""
    return f"'{ref.repo_id}' is no folder here, and "


@contextmanager
def hub_errors(ref: HubRef, what: str = "download"):
    """Translate huggingface_hub / network failures while talking about ``ref`` into FlashI2VError."""
    from huggingface_hub import errors as e

    # Newer huggingface_hub names more failures; with an older one these clauses match nothing extra.
    incomplete = getattr(e, "IncompleteSnapshotError", ())
    no_token = getattr(e, "LocalTokenNotFoundError", ())
    xet = getattr(e, "XetDownloadError", ConnectionError)
    repo = ref.repo_id
    try:
        yield
    except FlashI2VError:
        raise
    except e.GatedRepoError:
        raise FlashI2VError(f"{repo} is a gated repository: accept its terms at https://huggingface.co/{repo}, then log "
                            "in (`hf auth login`) or set HF_TOKEN") from None
    except e.RepositoryNotFoundError:
        raise FlashI2VError(f"{_folder_too(ref)}no Hub model repository '{repo}' exists, or it is private and you are "
                            "not logged in: check the path or id, or log in (`hf auth login` / HF_TOKEN)") from None
    except e.RevisionNotFoundError:
        raise FlashI2VError(f"{repo} has no revision '{ref.revision}': use a branch, tag or commit that exists "
                            f"(see https://huggingface.co/{repo}/tree/main), or leave out @REVISION") from None
    except incomplete as err:
        raise FlashI2VError(f"the {what} of {repo} is incomplete in the cache (interrupted?), and the Hub cannot be "
                            f"reached: connect and run again to finish it ({_first_line(err)})") from None
    except no_token:
        raise FlashI2VError(f"the {what} of {repo} needs a Hugging Face token and none is set: log in "
                            "(`hf auth login`) or set HF_TOKEN") from None
    except e.OfflineModeIsEnabled:
        raise FlashI2VError(f"{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE "
                            "to download it once, or pass a local folder") from None
    except e.LocalEntryNotFoundError:
        if cache.offline():
            raise FlashI2VError(f"{_folder_too(ref)}the Hub model {ref} is not in the Hugging Face cache "
                                f"({cache.hub_cache_dir()}) and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE to download "
                                "it once" + (", or check the folder path" if _folder_too(ref) else "")) from None
        raise FlashI2VError(f"cannot reach the Hugging Face Hub for {repo} and it is not cached: check the "
                            "connection (or HF_ENDPOINT) and run again") from None
    except e.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise FlashI2VError(f"the Hub refused access to {repo} (HTTP {status}): log in with a token that may read "
                                "it (`hf auth login` or HF_TOKEN)") from None
        raise FlashI2VError(f"the {what} of {repo} failed ({_first_line(err)}): run again; files already downloaded "
                            "are kept and the download resumes") from None
    except (ConnectionError, TimeoutError, xet) as err:
        raise FlashI2VError(_unreachable(ref, what, err)) from None
    except Exception as err:
        if type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise FlashI2VError(_unreachable(ref, what, err)) from None
        raise


def _unreachable(ref: HubRef, what: str, err: BaseException) -> str:
    detail = f"{type(err).__name__}: {_first_line(err)}"
    if what == "file listing":
        return (f"{_folder_too(ref)}the Hugging Face Hub cannot be reached to look up {ref.repo_id} ({detail}): check "
                + ("the folder path, " if _folder_too(ref) else "")
                + "the connection (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use what is cached")
    return (f"the {what} of {ref.repo_id} was interrupted ({detail}): run again; files already downloaded are kept "
            "and the download resumes")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


# -- one Hub model --------------------------------------------------------------------------------------


class HubModel:
    """``ref`` resolved against the Hub (or the cache, offline) into a local pipeline folder."""

    def __init__(self, ref: HubRef, components_repo: str, token: str | bool | None = None):
        self.ref = ref
        self.components_repo = components_repo
        self.token = token
        self.offline = cache.offline()
        self.hub_cache = cache.hub_cache_dir()

    # 1. the file list and the commit it belongs to
    def listing(self, repo: str, revision: str | None) -> tuple[str, dict[str, int | None]]:
        """(commit sha, {path: size}) of ``repo`` at ``revision``."""
        ref = self.ref if repo == self.ref.repo_id else HubRef(repo, revision, explicit=True)
        with hub_errors(ref, "file listing"):
            if not self.offline:
                from huggingface_hub import HfApi

                info = HfApi().model_info(repo, revision=revision, files_metadata=True, token=self.token)
                return info.sha, {s.rfilename: s.size for s in info.siblings or []}
            return self._cached_listing(repo, revision)

    def _cached_listing(self, repo: str, revision: str | None) -> tuple[str, dict[str, int | None]]:
        from huggingface_hub.errors import LocalEntryNotFoundError

        folder = self.hub_cache / f"models--{repo.replace('/', '--')}"
        sha = revision if revision and len(revision) == 40 else None
        ref_file = folder / "refs" / (revision or "main")
        if sha is None and ref_file.is_file():
            sha = ref_file.read_text().strip()
        if sha is None:
            raise LocalEntryNotFoundError(f"{repo}: no cached revision")
        try:
            from huggingface_hub import get_cached_repo_tree
            from huggingface_hub.errors import CachedRepoTreeNotFoundError

            return sha, {f.path: f.size for f in get_cached_repo_tree(repo, revision=sha, cache_dir=self.hub_cache)}
        except (ImportError, CachedRepoTreeNotFoundError):  # an older huggingface_hub, or files copied in by hand
            snapshot = folder / "snapshots" / sha
            return sha, {p.relative_to(snapshot).as_posix(): None for p in snapshot.rglob("*") if p.is_file()}

    # 2-4.
    def folder(self) -> Path:
        sha, files = self.listing(self.ref.repo_id, self.ref.revision)
        plan = plan_repo(files, self.ref.repo_id, self.ref.subpath)
        if plan.direct:
            snapshot, = self.download([(self.ref, plan.patterns, files, sha)], convert_bytes=0)
            return snapshot / plan.transformer if plan.transformer else snapshot
        companion = self.components_repo if plan.missing else None
        nondefault = companion if companion and companion != DEFAULT_COMPONENTS_REPO else None
        name = cache.entry_name(self.ref.repo_id, sha, nondefault)
        if self.ref.subpath:
            name += "@" + self.ref.subpath.replace("/", "--")
        entry = cache.cache_dir() / name
        # One conversion per entry, even when several processes start at once (torchrun starts one per GPU):
        # the others wait here, then find the entry complete.
        with cache.entry_lock(entry):
            problem = cache.entry_problem(entry) if entry.exists() else None
            if entry.exists() and problem is None:
                cache.mark_used(entry)
                return entry / cache.MODEL_DIR
            if problem:
                _note(f"the converted cache entry {entry} is damaged ({problem}): rebuilding it")
            return self.build(entry, sha, plan, files)

    def download(self, jobs: list[tuple[HubRef, list[str], dict, str]], convert_bytes: int) -> list[Path]:
        """Check the space, then fetch each job's (ref, patterns, listing, sha) files; their snapshot folders."""
        if not self.offline:
            self.check_space(jobs, convert_bytes)
        from huggingface_hub import snapshot_download

        paths = []
        for ref, patterns, _, _ in jobs:
            with hub_errors(ref):
                # The revision as given (not the sha): huggingface_hub then records refs/<branch>, which is how an
                # offline run finds the snapshot again.
                paths.append(Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns,
                                                    cache_dir=self.hub_cache, token=self.token,
                                                    local_files_only=self.offline)))
        return paths

    def check_space(self, jobs, convert_bytes: int) -> None:
        """Say what is coming; refuse, in one line, a download + conversion that cannot fit on the disk."""
        from huggingface_hub import try_to_load_from_cache

        need, parts = 0, []
        for ref, patterns, listing, sha in jobs:
            wanted = RepoPlan("", "", patterns).files(listing)
            size = sum(listing[f] or 0 for f in wanted if not isinstance(
                try_to_load_from_cache(ref.repo_id, f, cache_dir=self.hub_cache, revision=sha), str))
            if size:
                need += size
                parts.append(f"{format_size(size)} from {ref.repo_id}")
        by_disk: dict[int, list] = {}
        for folder, size in ((self.hub_cache, need), (cache.cache_dir(), convert_bytes)):
            existing = _existing_parent(folder)
            by_disk.setdefault(existing.stat().st_dev, [existing, 0])[1] += size
        for existing, size in by_disk.values():
            free = shutil.disk_usage(existing).free
            if size + _SPACE_MARGIN > free:
                raise FlashI2VError(f"{self.ref.repo_id} needs {format_size(size)} on the disk of {existing} "
                                    f"(download {format_size(need)}, conversion {format_size(convert_bytes)}) but only "
                                    f"{format_size(free)} is free: free some space, or set HF_HOME (or HF_HUB_CACHE "
                                    "and FLASHI2V_CACHE) to a larger disk")
        if parts:
            free = shutil.disk_usage(_existing_parent(self.hub_cache)).free
            _note(f"downloading {' and '.join(parts)} into {self.hub_cache} ({format_size(free)} free)")

    def build(self, entry: Path, sha: str, plan: RepoPlan, files: dict[str, int | None]) -> Path:
        jobs = [(self.ref, plan.patterns, files, sha)]
        if plan.missing:
            companion = HubRef(self.components_repo, None, explicit=True)
            csha, cfiles = self.listing(companion.repo_id, None)
            patterns = companion_patterns(plan.missing)
            absent = [p[:-2] for p in patterns if not RepoPlan("", "", [p]).files(cfiles)]
            if absent:
                raise FlashI2VError(f"{self.ref.repo_id} has no {', '.join(plan.missing)} and the components repository "
                                    f"{companion.repo_id} lacks {', '.join(absent)}: pass components_repo= (or set "
                                    "FLASHI2V_COMPONENTS_REPO) naming a Wan2.1 -Diffusers repository")
            jobs.append((companion, patterns, cfiles, csha))
        weights = [p for p in plan.patterns if not any(p.startswith(c) for c in plan.components.values())]
        convert_bytes = download_size(files, weights) if plan.kind != "flashi2v" else 0
        # Components are hard links when both caches share a disk and the component is a ready folder; an original
        # .pth is converted (written again), and across disks everything is copied.
        same_disk = _existing_parent(self.hub_cache).stat().st_dev == _existing_parent(entry.parent).stat().st_dev
        for name, path in plan.components.items():
            if not same_disk or path.endswith(".pth"):
                convert_bytes += download_size(files, [path, f"{path}/*"])
        if not same_disk and len(jobs) > 1:
            convert_bytes += download_size(jobs[1][2], jobs[1][1])
        snapshot, *rest = self.download(jobs, convert_bytes)
        parts = {name: snapshot / path for name, path in plan.components.items()}
        parts.update({name: rest[0] / name for name in plan.missing})
        _note(f"converting {self.ref} ({plan.kind}) into {entry} (once; later loads reuse it)")
        with staged_folder(entry) as staging:
            model = staging / cache.MODEL_DIR
            if plan.kind == "flashi2v":
                report = _assemble_ours(snapshot / plan.transformer, model, parts)
            else:
                from ..weights import convert_checkpoint

                report = convert_checkpoint(snapshot / plan.transformer, model, link_files=True,
                                            **{k: parts.get(k) for k in ("vae", "text_encoder", "tokenizer")})
                settings = snapshot / plan.transformer / "pipeline.json"
                if settings.is_file():
                    shutil.copyfile(settings, model / "pipeline.json")
            if "initialised from T2V" in report:
                _note(f"{self.ref.repo_id} is a text-to-video model: its FlashI2V modules start at zero, so it is a "
                      "starting point for training rather than an image-to-video model")
            cache.write_entry(staging, {
                "repo_id": self.ref.repo_id, "revision": self.ref.revision, "sha": sha, "subpath": self.ref.subpath,
                "kind": plan.kind, "components_repo": self.components_repo if rest else None,
                "components_sha": rest[0].name if rest else None,
                "components_from_companion": plan.missing, "report": report})
        return entry / cache.MODEL_DIR


def _existing_parent(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _assemble_ours(src: Path, dst: Path, parts: dict[str, Path]) -> str:
    """Our own folder that lacks components: its files hard-linked, the missing components beside them."""
    from ..weights.components import copy_folder, write_tokenizer

    copy_folder(src, dst, link=True)
    lines = [f"transformer: {src} (our format, linked)"]
    for name in ("vae", "text_encoder"):
        if not (dst / name).is_dir():
            copy_folder(parts[name], dst / name, link=True)
            lines.append(f"{name}: {parts[name]}")
    if "tokenizer" in parts and not (dst / "tokenizer").is_dir():
        lines.append(write_tokenizer(parts["tokenizer"], dst / "tokenizer"))
    return "\n".join(lines)
