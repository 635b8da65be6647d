"""The YAML documents of the source document, as a shell would pass them to kubectl.

The seed lives beside the repository (``../shared/seed``) where it is available;
``manifests/examples/seed-*.yaml`` are verbatim copies that tests use everywhere
(a test checks they still match the seed when it is present).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "artifactpromotionrun-corpwechat-notification.md"
EXAMPLES = ROOT / "manifests" / "examples"

# file name in manifests/examples → a phrase identifying the seed's block
BLOCKS = {
    "seed-apiserversource.yaml": "kind: ApiServerSource",
    "seed-corpwechat-server-secret.yaml": "name: platform-corpwechat-server",
    "seed-katanomi-config-patch.yaml": "notification.templates:",
    "seed-clustersubscription-admin.yaml": 'name: "admin-artifactpromotionrun-subscription"',
    "seed-clustersubscription-multi-namespace.yaml": "name: user1-subscription",
}
# The example scenario's people: each one's ClusterSubscription (the seed's for admin, the
# dev stack's for the others) and the English part of each shipped template's title.
SEED_SUBSCRIPTIONS = {"admin": "admin-artifactpromotionrun-subscription",
                      "alice": "alice-artifactpromotionrun-subscription",
                      "bob": "bob-artifactpromotionrun-subscription",
                      "carol": "carol-artifactpromotionrun-subscription"}
TITLES = {"ApprovalPending": "Artifact promotion awaiting your approval",
          "ApprovalDenied": "Artifact promotion denied",
          "Running": "Artifact promotion approved and running",
          "Failed": "Artifact promotion failed"}


_SHELL = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
_HEREDOC = re.compile(r"<<\s*'?EOF'?[^\n]*\n(.*?)\nEOF\b", re.DOTALL)


def heredocs(markdown: str) -> list[str]:
    """Each heredoc body, with the shell's ``\\$`` unescaped as an unquoted heredoc does."""
    return [body.replace("\\$", "$") + "\n" for body in _HEREDOC.findall(markdown)]


def shell_block(*markers: str) -> str:
    """The one ```bash block of the seed document that contains every marker, as written."""
    blocks = _SHELL.findall(SEED.read_text(encoding="utf-8"))
    matches = [b for b in blocks if all(m in b for m in markers)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} seed shell blocks contain {markers!r}")
    return str(matches[0])


def seed_blocks() -> dict[str, str]:
    """File name → YAML text, read from the seed document (which must exist)."""
    bodies = heredocs(SEED.read_text(encoding="utf-8"))
    found = {}
    for name, marker in BLOCKS.items():
        matches = [b for b in bodies if marker in b]
        if len(matches) != 1:
            raise LookupError(f"{name}: {len(matches)} seed blocks contain {marker!r}")
        found[name] = matches[0]
    return found


def example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


if __name__ == "__main__":  # refresh the copies from the seed
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for file_name, text in seed_blocks().items():
        (EXAMPLES / file_name).write_text(text, encoding="utf-8")
        print("wrote", (EXAMPLES / file_name).relative_to(ROOT))
