"""Unit tests of the clusters capability: quoting, certificates, encryption at rest, Slurm parsers, CA files.

No cluster needed; ``ssh-keygen -L`` (OpenSSH's own parser) checks the certificates we build.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from heroes_service.clusters import embedded, identity
from heroes_service.clusters.certs import UserCA
from heroes_service.clusters.connector import CommandResult, HostKey, build_command
from heroes_service.clusters.errors import ClusterError, CommandFailed, InvalidArgument, NoClusterAccess
from heroes_service.clusters.service import normalise_fingerprint
from heroes_service.clusters.slurm import (normalise_state, parse_job_id, parse_sacct, parse_sinfo, parse_squeue,
                                           parse_version)
from heroes_service.clusters.vault import Vault

CANARIES = ["'; touch {m}; '", '"; touch {m}; "', "$(touch {m})", "`touch {m}`", "a\ntouch {m}", "> {m}",
            "x && touch {m}", "$HOME * ?", "\\'", "-n", ""]


def test_build_command_quotes_every_element_for_a_posix_shell(tmp_path):
    marker = tmp_path / "fired"
    values = [c.format(m=marker) for c in CANARIES]
    command = build_command(["printf", "%s\\0", *values])
    assert shlex.split(command) == ["printf", "%s\\0", *values]
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == values
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == values
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["id; rm -rf /", b"id", [], ["echo", 1], ["echo", None], ["a\x00b"], ("",)[:0]])
def test_build_command_refuses_what_cannot_be_an_argv(bad):
    with pytest.raises(InvalidArgument):
        build_command(bad)


def test_command_result_check():
    assert CommandResult(0, "x", "").check().stdout == "x"
    with pytest.raises(CommandFailed, match="exited 3: boom"):
        CommandResult(3, "", "boom", command="false").check()


def test_host_key_parse_and_fingerprint(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "k.pub").read_text()
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True,
                              check=True).stdout.split()[1]
    hk = HostKey.parse(pub)
    assert hk.fingerprint == expected
    assert HostKey.parse(f"[127.0.0.1]:2221 {hk.line()}") == hk
    with pytest.raises(ValueError):
        HostKey.parse("ssh-ed25519")
    assert normalise_fingerprint(expected[7:]) == expected
    assert normalise_fingerprint(expected + "=") == expected


def test_vault_encrypts_with_a_private_key_file(tmp_path):
    vault = Vault(tmp_path / "secrets")
    token = vault.encrypt("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    assert "secret" not in token and vault.decrypt(token).endswith("secret\n")
    key_file = tmp_path / "secrets" / "clusters.fernet"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert Vault(tmp_path / "secrets").decrypt(token).endswith("secret\n")  # same key file, new process
    with pytest.raises(ClusterError, match="cannot be decrypted"):
        Vault(tmp_path / "other").decrypt(token)


def _inspect(tmp_path: Path, certificate: str) -> str:
    path = tmp_path / "id-cert.pub"
    path.write_text(certificate + "\n")
    return subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True).stdout


def test_certificates_are_what_openssh_expects(tmp_path):
    ca = UserCA(Vault(tmp_path / "secrets"))
    signed = ca.sign(["bob"], key_id="heroes:bob@alpha", validity_s=600)
    text = _inspect(tmp_path, signed.certificate)
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in text
    assert f"Signing CA: ED25519 {ca.fingerprint()}" in text
    assert 'Key ID: "heroes:bob@alpha"' in text
    assert "Principals: \n                bob" in text
    assert "Critical Options: (none)" in text and "Extensions: (none)" in text
    assert 540 <= signed.valid_before - time.time() <= 600
    assert signed.pkey.public_blob is not None  # paramiko offers the certificate, not the bare key
    # the CA key is created once and kept encrypted at rest
    enc = (tmp_path / "secrets" / "user_ca_ed25519.enc")
    assert b"PRIVATE KEY" not in enc.read_bytes() and enc.stat().st_mode & 0o777 == 0o600
    assert UserCA(Vault(tmp_path / "secrets")).public_key_line() == ca.public_key_line()
    assert (tmp_path / "secrets" / "user_ca_ed25519.pub").read_text().split()[:2] == ca.public_key_line().split()[:2]


def test_certificate_window_can_be_set(tmp_path):
    ca = UserCA(Vault(tmp_path / "s"))
    signed = ca.sign(["alice"], key_id="x", validity_s=0, valid_after=1_000_000_000, valid_before=1_000_000_060)
    assert "Valid: from 2001-09-09" in _inspect(tmp_path, signed.certificate)


def test_private_keys_are_parsed_without_echo(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert identity.load_private_key(key.read_text()).get_name() == "ssh-ed25519"
    with pytest.raises(ValueError) as err:
        identity.load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretish\n-----END")
    assert "secretish" not in str(err.value)


class P:
    def __init__(self, username, organization="acme", **extra):
        self.username, self.organization = username, organization
        self.__dict__.update(extra)


def test_cluster_logins(monkeypatch):
    """An explicit login or the platform admin's attribute count; a username alone never does."""
    monkeypatch.setattr(embedded, "published_login_anywhere", lambda principal: None)  # no embedded node here
    identity.set_cluster_login_resolver(None)
    with pytest.raises(NoClusterAccess, match="has no login"):
        identity.cluster_login(P("bob"))
    assert identity.cluster_login(P("bob", cluster_login="b0b")) == "b0b"
    assert identity.cluster_login(P("bob", attributes={"cluster_login": ["robert"]})) == "robert"
    identity.set_cluster_login_resolver(lambda p: "mapped")
    try:
        assert identity.cluster_login(P("bob")) == "mapped"
    finally:
        identity.set_cluster_login_resolver(None)
    for bad in ("Bob", "root;id", "a b", "-x", "x" * 40, ""):
        with pytest.raises(NoClusterAccess):
            identity.cluster_login(P(bad))
    for refused in ("root", "jh-carol", "heroes", "daemon"):
        with pytest.raises(NoClusterAccess, match="refused"):
            identity.cluster_login(P("bob", cluster_login=refused))


def test_parse_sinfo_merges_rows_per_partition():
    text = "compute*|up|infinite|2|2|2048|(null)\ngpu|up|1-00:00:00|1|8|64000|gpu:a100:4\ngpu|up|1-00:00:00|2|8|64000|gpu:a100:4\n"
    parts = {p.name: p for p in parse_sinfo(text)}
    assert parts["compute"].default and parts["compute"].nodes == 2 and parts["compute"].gres == ""
    assert not parts["gpu"].default and parts["gpu"].nodes == 3 and parts["gpu"].gres == "gpu:a100:4"


def test_parse_squeue_keeps_pipes_in_job_names():
    rows = parse_squeue("1001|RUNNING|bob|compute|None|alpha-n1|0:05|5:00|a|b|c\n1002|PENDING|carol|compute|"
                        "Resources||0:00|5:00|plain\n")
    assert rows[0].name == "a|b|c" and rows[0].nodes == "alpha-n1" and rows[0].state == "RUNNING"
    assert rows[1].reason == "Resources" and rows[1].nodes == ""


def test_parse_sacct_states_and_exit_codes():
    rows = parse_sacct("1001|CANCELLED by 1003|bob|compute|0:15|alpha-n1|00:00:03|2026-01-01T00:00:00|"
                       "2026-01-01T00:00:03|2026-01-01T00:00:00|alpha|billing=1,cpu=1,mem=1G,node=1|5100|x|y\n"
                       "1002|FAILED|bob|compute|2:0|alpha-n2|00:00:01|S|E|U|alpha||0|fail\n")
    assert rows[0].state == "CANCELLED" and rows[0].raw_state == "CANCELLED by 1003"
    assert rows[0].exit_code == 0 and rows[0].signal == 15 and rows[0].name == "x|y"
    assert rows[0].alloc_tres == "billing=1,cpu=1,mem=1G,node=1" and rows[0].energy_j == 5100.0
    assert rows[1].state == "FAILED" and rows[1].exit_code == 2 and rows[1].cluster == "alpha"
    assert rows[1].energy_j is None  # 0: the cluster does not measure energy
    assert normalise_state("COMPLETING+") == "COMPLETING"


def test_parse_version_and_job_id():
    assert parse_version("slurm-wlm 22.05.8\n") == "22.05.8"
    assert parse_version("slurm 23.11.4") == "23.11.4"
    assert parse_job_id("1234\n") == "1234" and parse_job_id("sbatch: note\n1234;alpha\n") == "1234"
    with pytest.raises(ValueError):
        parse_job_id("sbatch: error: Batch job submission failed")


def test_ca_file_install_is_idempotent_and_keeps_other_lines(tmp_path):
    path = tmp_path / "trusted_user_ca_keys"
    path.write_text("ssh-ed25519 AAAAother site-ca")  # no trailing newline
    line = "ssh-ed25519 AAAAours heroes-gateway-user-ca"
    assert embedded.install_ca(path, line) is True
    assert embedded.install_ca(path, line) is False
    assert path.read_text() == "ssh-ed25519 AAAAother site-ca\n" + line + "\n"
    assert embedded.remove_ca(path, line) is True
    assert path.read_text() == "ssh-ed25519 AAAAother site-ca\n"


def test_only_embedded_login_nodes_get_the_ca(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "embedded_login_nodes", lambda: {("127.0.0.1", 2221): tmp_path / "f"})
    (tmp_path / "f").write_text("")
    assert embedded.install_ca_if_embedded("10.0.0.1", 22, "ssh-ed25519 AAAA x") is None
    assert embedded.install_ca_if_embedded("127.0.0.1", 2221, "ssh-ed25519 AAAA x") == tmp_path / "f"
    assert os.path.getsize(tmp_path / "f") > 0


def test_peak_memory_is_the_largest_maxrss_of_a_jobs_steps():
    from heroes_service.clusters.slurm import parse_peak_memory, parse_size_mb

    text = ("41|\n41.batch|310528K\n41.extern|0\n41.0|1.50G\n"
            "42|\n42.batch|0\n42.extern|\n"      # too short to be sampled: no peak, not a peak of 0
            "43.batch|2048\n"                     # a bare number is KiB
            "garbage line\n|12K\n44.batch|lots\n")
    assert parse_peak_memory(text) == {"41": 1536.0, "43": 2.0}
    assert parse_size_mb("4G") == 4096.0 and parse_size_mb("512M") == 512.0 and parse_size_mb("1024k") == 1.0
    assert parse_size_mb("") is None and parse_size_mb("12X") is None and parse_size_mb("-5K") is None
