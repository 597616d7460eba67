"""Unit tests of the package_source filter (plugins/filter/package_source.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from plugin_loader import load_plugin

package_source = load_plugin("filter", "package_source")
fingerprints = package_source.package_source_key_fingerprints
problem = package_source.package_source_key_problem
components = package_source.package_source_apt_components
enabled_stream = package_source.package_source_dnf_enabled_stream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_filters_are_registered():
    assert set(package_source.FilterModule().filters()) == {
        "package_source_key_fingerprints",
        "package_source_key_problem",
        "package_source_apt_components",
        "package_source_dnf_enabled_stream",
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two keys made by gpg (RSA and Ed25519), armoured and binary, with gpg's fingerprints."""
    if not shutil.which("gpg"):
        pytest.skip("gpg is not installed")
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str, binary: bool = False):
        out = subprocess.run(
            ["gpg", "--batch", "--quiet", *args], env=env, check=True, capture_output=True
        )
        return out.stdout if binary else out.stdout.decode()

    for uid, algo in (("rsa <rsa@invalid>", "rsa3072"), ("ed <ed@invalid>", "ed25519")):
        gpg(
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
            "--quick-generate-key",
            uid,
            algo,
            "default",
            "never",
        )
    colons = gpg("--with-colons", "--fingerprint", "--list-keys")
    primaries = [
        line.split(":")[9]
        for prev, line in zip(colons.splitlines(), colons.splitlines()[1:], strict=False)
        if prev.startswith("pub:") and line.startswith("fpr:")
    ]
    yield {
        "rsa": gpg("--armor", "--export", "rsa@invalid"),
        "ed_binary": gpg("--export", "ed@invalid", binary=True),
        "both": gpg("--armor", "--export"),
        "fingerprints": primaries,
    }
    # gpg started an agent for this home: stop it, leave no process behind.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)


def test_fingerprints_are_those_gpg_prints(keys):
    rsa, ed = keys["fingerprints"]
    assert fingerprints(keys["rsa"]) == [rsa]
    assert fingerprints(keys["ed_binary"]) == [ed]
    assert fingerprints(keys["both"]) == [rsa, ed]


def test_the_expected_key_passes_whatever_the_spelling(keys):
    rsa = keys["fingerprints"][0]
    spaced = " ".join(rsa[i : i + 4] for i in range(0, 40, 4)).lower()
    assert problem(keys["rsa"], [spaced], "https://example.invalid/gpg") == ""
    assert problem(keys["rsa"], ["0x" + rsa], "") == ""


def test_another_key_is_refused_naming_both_fingerprints(keys):
    rsa, ed = keys["fingerprints"]
    message = problem(keys["rsa"], [ed], "https://example.invalid/gpg")
    assert message == (
        f"the key from https://example.invalid/gpg has the fingerprint {rsa}, "
        f"not the one expected ({ed})"
    )


def test_a_file_with_an_extra_key_is_refused(keys):
    rsa, ed = keys["fingerprints"]
    assert ed in problem(keys["both"], [rsa], "u")


def test_no_expected_fingerprint_trusts_nothing(keys):
    assert "no expected fingerprint" in problem(keys["rsa"], [], "u")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<html>404 Not Found</html>", "no -----BEGIN PGP PUBLIC KEY BLOCK----- line"),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQIN\n",
            "no -----END PGP PUBLIC KEY BLOCK----- line",
        ),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "is not base64",
        ),
    ],
)
def test_what_is_not_a_key_is_named(text, reason):
    message = problem(text, ["AB" * 20], "https://example.invalid/key")
    assert message.startswith(
        "the key from https://example.invalid/key is not an OpenPGP public key file"
    )
    assert reason in message


def test_a_corrupted_armour_is_caught_by_its_checksum(keys):
    lines = keys["rsa"].splitlines()
    body = next(
        i for i, line in enumerate(lines) if line and ":" not in line and not line.startswith("-")
    )
    lines[body] = ("B" if lines[body][0] != "B" else "C") + lines[body][1:]
    assert "checksum does not match" in problem("\n".join(lines), ["AB" * 20])


ONE_LINE = """\
# Debian's archive
deb http://mirror.invalid/debian bookworm main
deb-src http://mirror.invalid/debian bookworm main non-free-firmware
deb [signed-by=/k.gpg] http://mirror.invalid/debian-security bookworm-security main contrib
deb http://vendor.invalid/repo stable vendor
"""


def test_one_line_sources_get_contrib_on_the_archive_entries_only():
    result = components(ONE_LINE, ["contrib"])
    assert result["content"] == (
        "# Debian's archive\n"
        "deb http://mirror.invalid/debian bookworm main contrib\n"
        "deb-src http://mirror.invalid/debian bookworm main non-free-firmware contrib\n"
        "deb [signed-by=/k.gpg] http://mirror.invalid/debian-security bookworm-security"
        " main contrib\n"
        "deb http://vendor.invalid/repo stable vendor\n"
    )
    assert result["changed"] is True
    assert result["entries"] == 2
    again = components(result["content"], ["contrib"])
    assert again == {"content": result["content"], "changed": False, "entries": 0}


DEB822 = """\
Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_deb822_sources_get_contrib_in_each_stanza():
    result = components(DEB822, ["contrib"])
    assert result["content"].count("Components: main contrib\n") == 1
    assert "Components: main non-free-firmware contrib\n" in result["content"]
    assert result["entries"] == 2
    assert components(result["content"], ["contrib"])["changed"] is False


def test_an_empty_or_missing_file_has_nothing_to_change():
    assert components("", ["contrib"]) == {"content": "", "changed": False, "entries": 0}


DNF_MODULE_LIST = """\
CUDA
Name           Stream           Profiles                                 Summary
nvidia-driver  580-open [e]     default [d], fm, ks, src  Nvidia driver for 580-open branch

Hint: [d]efault, [e]nabled, [x]disabled, [i]nstalled
"""


@pytest.mark.parametrize(
    ("text", "stream"),
    [
        (DNF_MODULE_LIST, "580-open"),
        (DNF_MODULE_LIST.replace("580-open [e]  ", "open-dkms [d][e]"), "open-dkms"),
        (DNF_MODULE_LIST.replace("580-open [e]  ", "580-open [d]   "), ""),
        ("Error: No matching Modules to list\n", ""),
        ("", ""),
    ],
)
def test_the_enabled_stream_is_read_from_dnf_module_list(text, stream):
    assert enabled_stream(text, "nvidia-driver") == stream
