"""Files from the Hugging Face hub, with the revision they came from and one-line failures.

The token of a gated model is the user's own (``HF_TOKEN`` or ``huggingface-cli login``):
huggingface_hub reads it; tuner only asks whether there is one, and never prints or stores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuner.errors import StoreError

__all__ = ["WEIGHT_FILES", "HubFile", "hub_download"]

# The names a timm checkpoint has on the hub, in the order timm tries them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class HubFile:
    """A file of a hub repository in the local cache, and the commit it belongs to."""

    path: Path
    repo: str
    filename: str
    revision: str | None

    def describe(self) -> dict[str, str]:
        return {"repo": self.repo, "revision": self.revision or "unknown", "file": self.filename}


def hub_download(
    repo: str, filenames: tuple[str, ...], revision: str | None, *, what: str, fallback: str
) -> HubFile:
    """The first of ``filenames`` that ``repo`` holds, from the cache or downloaded.

    ``what`` names the file in messages ("the weights of uni"); ``fallback`` is the way around
    a download that cannot happen ("download it elsewhere and pass its path as the weights").
    """
    from huggingface_hub import get_token, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = "the token set has no access" if get_token() else "no token is set (HF_TOKEN)"
    offline = False
    for filename in filenames:
        try:
            path = Path(
                hf_hub_download(repo, filename, revision=revision, local_files_only=offline)
            )
        except GatedRepoError:
            raise StoreError(
                f"the Hugging Face hub refused {what}: {repo} is gated and {token}; accept its "
                f"licence on https://huggingface.co/{repo} and set HF_TOKEN to a token of that "
                f"account, or {fallback}"
            ) from None
        except RepositoryNotFoundError:
            raise StoreError(
                f"the Hugging Face hub has no repository {repo!r} that this account may read "
                f"({token}); check the name, or set HF_TOKEN for a gated model, or {fallback}"
            ) from None
        except RevisionNotFoundError:
            raise StoreError(
                f"revision {revision!r} of {repo} does not exist on the Hugging Face hub; "
                "pass a branch, tag or commit of the repository"
            ) from None
        except (LocalEntryNotFoundError, OfflineModeIsEnabled):
            offline = True  # the hub cannot be reached: look for the next name in the cache only
            continue
        except EntryNotFoundError:
            continue
        except OSError as exc:  # connection errors and other HTTP failures
            raise StoreError(
                f"could not download {what} from the Hugging Face hub ({repo}: "
                f"{type(exc).__name__}); retry, or {fallback}"
            ) from None
        snapshot = path.parent
        commit = snapshot.name if snapshot.parent.name == "snapshots" else None
        return HubFile(path, repo, filename, commit)
    if offline:
        raise StoreError(
            f"could not download {what} from the Hugging Face hub ({repo}): offline and not in "
            f"the local cache; connect to the internet (with HF_HUB_OFFLINE unset), set "
            f"HF_TOKEN if the model is gated, or {fallback}"
        )
    raise StoreError(
        f"{repo} on the Hugging Face hub holds none of {', '.join(filenames)}; it is not a timm "
        "checkpoint: import embeddings of this model with 'tuner features import' instead"
    )
