"""Nothing that looks like a credential in what is shipped to a cluster: the compiled pipelines, the manifests and
the image definitions. Credentials come from the pod's service account (Workload Identity) or a named secret."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCANNED = ("pipelines/*.yaml", "manifests/**/*", "images/*")

CREDENTIAL_PATTERNS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a service-account key field": re.compile(r"[\"']?private_key(_id)?[\"']?\s*:\s*[\"']?\S"),
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "an AWS secret access key": re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.IGNORECASE),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "a Google OAuth token": re.compile(r"\bya29\.[0-9A-Za-z_\-]{20,}"),
    "a Hugging Face or GitHub token": re.compile(r"\b(hf_[A-Za-z]{30,}|gh[pousr]_[A-Za-z0-9]{36})\b"),
    "a bearer token": re.compile(r"\bbearer\s+[A-Za-z0-9\-._~+/]{20,}=*", re.IGNORECASE),
    # A value after password/secret/token keys, unless it is a reference filled in elsewhere (${...}, {{...}}).
    "a password or secret value": re.compile(
        r"(?<![A-Za-z])(password|passwd|client_secret|secret_key|api_key|access_token)\b[\"']?\s*[:=]\s*[\"']?(?![\"']|\$|\{\{|$)\S",
        re.IGNORECASE),
}


def credentials_in(text: str) -> list[tuple[int, str]]:
    """(line number, what it looks like) for every line of `text` that looks like it holds a credential."""
    return [(number, kind) for number, line in enumerate(text.splitlines(), start=1)
            for kind, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(line)]


def scanned_files() -> list[Path]:
    return sorted({path for pattern in SCANNED for path in ROOT.glob(pattern) if path.is_file()})


def test_shipped_files_hold_no_credentials():
    files = scanned_files()
    assert any(path.name == "distillation.yaml" for path in files) and any("manifests" in path.parts for path in files)
    found = [f"{path.relative_to(ROOT)}:{number}: looks like {kind}"
             for path in files for number, kind in credentials_in(path.read_text(errors="replace"))]
    assert not found, "remove these, and use Workload Identity or a Kubernetes secret by name:\n" + "\n".join(found)


# Built here from pieces, so that this file does not itself look like it holds credentials.
PLANTED = [
    "-----BEGIN " + "PRIVATE KEY-----",
    '  "private_key": "-----BEGIN',
    "aws_access_key_id: AKIA" + "ABCDEFGHIJKLMNOP",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
    "key: AIza" + "SyA1234567890abcdefghijklmnopqrstuv",
    "Authorization: Bearer " + "eyJhbGciOiJSUzI1NiIsInR5cCI6",
    "token = ya29." + "a0AfH6SMBx1234567890abcdef",
    "HF_TOKEN=hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "  password: hunter2",
    'db_password = "s3cret"',
]
HARMLESS = [
    "  password: ${DB_PASSWORD}",
    "password: '{{workflow.parameters.password}}'",
    "- name: HF_TOKEN",
    "secretName: kdflow-gcp-key",
    "GOOGLE_APPLICATION_CREDENTIALS: /var/secrets/google/key.json",
    "password:",
]


@pytest.mark.parametrize("line", PLANTED)
def test_the_scan_finds_a_planted_credential(line):
    assert credentials_in(f"kind: Secret\n{line}\n")[0][0] == 2


@pytest.mark.parametrize("line", HARMLESS)
def test_the_scan_lets_references_and_names_pass(line):
    assert credentials_in(line) == []
