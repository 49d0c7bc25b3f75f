"""Publishing only what the merge wrote, and tokens that never leak (issue #10, items 3 and 4).

The real huggingface_hub client against the fake Hub of ``hub_server``, with the fixtures of
``test_upload``.
"""

import json
import logging
import os
from pathlib import Path

import click
import xxhash
import pytest
import yaml

from mergekit_awd.cli import run
from mergekit_awd.hub import tokens as tokens_module
from mergekit_awd.hub import upload as upload_module
from mergekit_awd.hub.tokens import normalise_token
from mergekit_awd.hub.upload import HubUploadError, check_write_access, upload_output
from mergekit_awd.cli.upload import check_publish_target
from mergekit_awd.hub.tokens import redact
from mergekit_awd.pipeline.output_layout import (
    COMPLETION_MARKER,
    MARKER_FORMAT,
    IncompleteOutputError,
    check_finished_output,
    write_completion_marker,
)
from mergekit_awd.testing.synthetic import awd_config
from test_upload import (  # noqa: F401  (hub, merged_output and output_copy are fixtures)
    FAST,
    TOKEN,
    folder_files,
    hub,
    merged_output,
    output_copy,
    without_gitattributes,
)

# A token whose 4-character pieces appear in no English message (TOKEN contains "oken").
ODD_TOKEN = "hf_Zq9XwV7kPm2RtY4bLn8JcQ5gHs3D"


def pieces(token: str, length: int = 4):
    """Every part of ``token`` longer than 3 characters, in its shortest form."""
    return {token[i:i + length] for i in range(len(token) - length + 1)}


def leaked(token: str, text: str):
    return sorted(p for p in pieces(token) if p in text)


def upload_cli(out: Path, repo: str, *extra: str) -> int:
    return run(["upload", str(out), repo, *extra])


def flip_a_byte(path: Path) -> None:
    """A same-size edit: one byte in the middle of the file, inverted."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        value = handle.read(1)[0]
        handle.seek(size // 2)
        handle.write(bytes([value ^ 0xFF]))
    assert path.stat().st_size == size


# --------------------------------------------------------------------------- the marker


def test_marker_records_the_digest_of_every_file(merged_output):
    marker = json.loads((merged_output / COMPLETION_MARKER).read_text())
    on_disk = folder_files(merged_output)
    del on_disk[COMPLETION_MARKER]
    assert marker["format"] == MARKER_FORMAT and marker["merge_method"] == "awd"
    assert set(marker["files"]) == set(on_disk)
    for name, content in on_disk.items():
        assert marker["files"][name] == {"xxh3_128": xxhash.xxh3_128(content).hexdigest(), "size": len(content)}
    assert marker["weights"] == {"model.safetensors": len(on_disk["model.safetensors"])}
    finished = check_finished_output(str(merged_output))
    assert finished.files == tuple(sorted(on_disk))
    assert finished.total_size == sum(len(c) for c in on_disk.values())


def test_sharded_output_is_recorded_and_checked(tmp_path):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(os.urandom(5000))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(os.urandom(3000))
    (tmp_path / "config.json").write_text("{}")
    write_completion_marker(str(tmp_path), {"merge_method": "task_arithmetic"})
    finished = check_finished_output(str(tmp_path))
    assert finished.weight_files == ("model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors")
    flip_a_byte(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(IncompleteOutputError, match="model-00002-of-00002.safetensors: changed since"):
        check_finished_output(str(tmp_path))


def test_marker_refuses_to_record_a_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the merge")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(os.urandom(1000))
    (out / "notes.txt").symlink_to(outside)
    with pytest.raises(IncompleteOutputError, match="notes.txt.*symbolic link"):
        write_completion_marker(str(out), {"merge_method": "awd"})
    assert not (out / COMPLETION_MARKER).exists()


def test_readme_may_be_removed_but_nothing_else(output_copy):
    (output_copy / "README.md").unlink()
    assert "README.md" not in check_finished_output(str(output_copy)).files
    (output_copy / "awd_report.json").unlink()
    with pytest.raises(IncompleteOutputError, match="awd_report.json: missing"):
        check_finished_output(str(output_copy))


# --------------------------------------------------------------------------- refused folders


def test_same_size_edit_of_the_weights_is_refused(hub, output_copy, capsys):
    flip_a_byte(output_copy / "model.safetensors")
    assert upload_cli(output_copy, "org/edited", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "changed since the merge finished" in err
    assert hub.requests == []
    with pytest.raises(IncompleteOutputError) as info:
        upload_output(str(output_copy), "org/edited", token=TOKEN, progress=False)
    assert info.value.path == str(output_copy / "model.safetensors")
    assert hub.requests == []


@pytest.mark.parametrize("marker", [{"weights": {}}, "old format"])
def test_a_marker_without_digests_is_refused(hub, tmp_path, capsys, marker):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(os.urandom(4096))
    if marker == "old format":  # what mergekit-awd wrote before the digests: sizes only
        marker = {"merge_method": "awd", "weights": {"model.safetensors": 4096}}
    (out / COMPLETION_MARKER).write_text(json.dumps(marker))
    assert upload_cli(out, "org/hand-written", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert "no file digests" in err and "re-run the merge" in err
    assert hub.requests == []


@pytest.mark.parametrize("link", ["file outside", "weights as a link to an identical copy", "folder outside"])
def test_a_symlink_in_the_folder_is_refused(hub, output_copy, tmp_path, capsys, link):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    if link == "file outside":
        (outside / "secret.txt").write_text("a private file that must not be published")
        (output_copy / "notes.txt").symlink_to(outside / "secret.txt")
        name = "notes.txt"
    elif link == "weights as a link to an identical copy":  # same bytes: the digest alone would pass
        weights = output_copy / "model.safetensors"
        weights.rename(outside / "model.safetensors")
        weights.symlink_to(outside / "model.safetensors")
        name = "model.safetensors"
    else:
        (outside / "private.txt").write_text("private")
        (output_copy / "extra").symlink_to(outside, target_is_directory=True)
        name = "extra"
    assert upload_cli(output_copy, "org/linked", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert f"{output_copy}: {name} is a symbolic link" in err
    assert hub.requests == []


def test_files_the_merge_did_not_write_are_refused_and_listed(hub, output_copy, capsys):
    (output_copy / "notes.txt").write_text("my notes")
    (output_copy / "sub").mkdir()
    (output_copy / "sub" / "data.bin").write_bytes(b"\0" * 10)
    assert upload_cli(output_copy, "org/extra", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert "2 file(s) not written by the merge: notes.txt, sub/data.bin" in err
    assert "move them out of the folder or re-run the merge" in err
    assert hub.requests == []


# --------------------------------------------------------------------------- what is uploaded


def test_an_edited_model_card_is_uploaded(hub, output_copy):
    readme = output_copy / "README.md"
    readme.write_text(readme.read_text() + "\nEvaluated by hand after the merge.\n")
    result = upload_output(str(output_copy), "org/card-edited", token=TOKEN, progress=False)
    arrived = hub.files("org/card-edited")
    assert arrived["README.md"] == readme.read_bytes()
    expected = folder_files(output_copy)
    del expected[COMPLETION_MARKER]
    assert without_gitattributes(arrived) == expected and set(result.files) == set(expected)


def test_git_and_cache_folders_are_neither_checked_nor_uploaded(hub, output_copy):
    (output_copy / ".git").mkdir()
    (output_copy / ".git" / "config").write_text("[core]\n")
    (output_copy / ".cache" / "huggingface").mkdir(parents=True)
    (output_copy / ".cache" / "huggingface" / "download.lock").write_text("")
    (output_copy / ".cache" / "other.txt").write_text("x")
    upload_output(str(output_copy), "org/with-git", token=TOKEN, progress=False)
    arrived = hub.files("org/with-git")
    assert not any(name.startswith((".git/", ".cache/")) for name in arrived)
    assert "model.safetensors" in arrived


def test_exactly_the_checked_files_are_uploaded(hub, output_copy, monkeypatch):
    """A file that appears between the check and the upload is not sent."""
    checked = upload_module.check_finished_output

    def check_then_add_a_file(out_dir):
        finished = checked(out_dir)
        (Path(out_dir) / "late.txt").write_text("written after the check")
        return finished

    monkeypatch.setattr(upload_module, "check_finished_output", check_then_add_a_file)
    result = upload_output(str(output_copy), "org/exact", token=TOKEN, progress=False)
    assert "late.txt" not in hub.files("org/exact") and "late.txt" not in result.files
    assert "model.safetensors" in hub.files("org/exact")


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("suffix", ["\r", "\n", "\r\n", " "])
def test_a_token_with_trailing_line_break_works(hub, merged_output, capsys, suffix):
    assert upload_cli(merged_output, "org/crlf", "--token", TOKEN + suffix, "--quiet") == 0, capsys.readouterr().err
    assert "model.safetensors" in hub.files("org/crlf")
    assert all(r.authorized for r in hub.requests if r.route not in ("lfs_upload", "unknown"))


def test_hf_token_with_a_crlf_works(hub, merged_output, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN + "\r\n")
    assert upload_cli(merged_output, "org/env-crlf", "--quiet") == 0, capsys.readouterr().err
    assert "model.safetensors" in hub.files("org/env-crlf")


@pytest.mark.parametrize("broken", ["newline", "tab", "carriage return", "HF_TOKEN newline"])
def test_a_token_with_whitespace_inside_is_refused_without_quoting_it(
        hub, merged_output, monkeypatch, capsys, caplog, broken):
    caplog.set_level(logging.DEBUG)
    separator = {"newline": "\n", "tab": "\t", "carriage return": "\r", "HF_TOKEN newline": "\n"}[broken]
    token = ODD_TOKEN[:14] + separator + ODD_TOKEN[14:]
    if broken.startswith("HF_TOKEN"):
        monkeypatch.setenv("HF_TOKEN", token)
        assert upload_cli(merged_output, "org/broken-token") == 1
    else:
        assert upload_cli(merged_output, "org/broken-token", "--token", token) == 1
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert "Error:" in captured.err and "cannot contain" in captured.err and "org/broken-token" in captured.err
    assert leaked(token, everything) == [] and leaked(token.replace(separator, ""), everything) == []
    assert "connection" not in captured.err
    assert hub.requests == []
    with pytest.raises(HubUploadError) as info:
        normalise_token(token, "--token", "org/x")
    assert leaked(token, str(info.value)) == [] and info.value.repo_id == "org/x"


def test_normalise_token():
    assert normalise_token(f"  {ODD_TOKEN}\r\n", "--token") == ODD_TOKEN
    assert normalise_token("\r\n", "--token") is None and normalise_token(None, "--token") is None
    for bad in (ODD_TOKEN[:5] + " " + ODD_TOKEN[5:], ODD_TOKEN + "\x00x", ODD_TOKEN + "é"):
        with pytest.raises(HubUploadError):
            normalise_token(bad, "--token")


def test_redact_covers_every_form_of_the_token():
    from urllib.parse import quote, quote_plus

    raw = ODD_TOKEN[:10] + "\r\n" + ODD_TOKEN[10:] + "\r"
    forms = [raw, raw.strip(), repr(raw), f"Illegal header value {('Bearer ' + raw).encode()!r}", json.dumps(raw), quote(raw), quote_plus(raw),
             quote(raw, safe=""), f"Authorization: Bearer {raw.strip()}"]
    for form in forms:
        text = redact(f"the request failed: {form} (see above)", raw)
        assert leaked(raw.strip(), text) == [], (form, text)
        assert leaked(ODD_TOKEN, text) == [], (form, text)


def test_an_http_header_error_never_leaks_the_token(hub, merged_output, monkeypatch, capsys, caplog):
    """Even when a token with a line break reaches the HTTP library, its header error is not shown."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(tokens_module, "normalise_token", lambda raw, source, repo_id=None: raw or None)
    token = ODD_TOKEN[:14] + "\n" + ODD_TOKEN[14:] + "\r"
    assert upload_cli(merged_output, "org/header", "--token", token) == 1
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert "not allowed in an HTTP header" in captured.err and "org/header" in captured.err
    assert "connection" not in captured.err
    assert leaked(token, everything) == [] and leaked(ODD_TOKEN, everything) == []


def test_a_token_the_hub_rejects_is_never_shown(hub, merged_output, capsys, caplog):
    from huggingface_hub.utils import logging as hf_logging

    caplog.set_level(logging.DEBUG)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_debug()
    try:
        assert upload_cli(merged_output, "org/rejected", "--token", ODD_TOKEN + "\r") == 1
    finally:
        hf_logging.set_verbosity(previous)
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "rejected the token" in captured.err
    assert leaked(ODD_TOKEN, captured.out + captured.err + caplog.text) == []
    assert "create" in hub.routes_called()
    assert not any(r.authorized for r in hub.requests if r.route not in ("lfs_upload", "unknown"))


# --------------------------------------------------------------------------- before the merge


@pytest.fixture
def push_config(tiny_family, tmp_path):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(awd_config(tiny_family, parameters=FAST)))
    return config


@pytest.fixture
def no_merge(monkeypatch):
    """Fail the test if the merge starts (no model file is read before the target is checked)."""
    import mergekit_awd.pipeline.runner

    started = []
    monkeypatch.setattr(mergekit_awd.pipeline.runner, "run_merge", lambda *a, **k: started.append(a) or 1 / 0)
    return started


@pytest.mark.parametrize("problem", ["wrong token", "read-only token", "foreign namespace"])
def test_push_to_hub_checks_the_token_before_merging(hub, push_config, tmp_path, capsys, caplog, no_merge, problem):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    token, repo = TOKEN, "org/pushed"
    if problem == "wrong token":
        token, expected = ODD_TOKEN, "rejected the token from --token (HTTP 401 Unauthorized)"
    elif problem == "read-only token":
        hub.role, expected = "read", "has no write access"
    else:
        repo, expected = "someone-else/pushed", "'someone-else' is neither the token's user (test-user) nor one"
    assert run([str(push_config), str(out), "--push-to-hub", repo, "--token", token]) == 1
    captured = capsys.readouterr()
    assert expected in captured.err and repo in captured.err
    assert not out.exists() and no_merge == []
    assert hub.routes_called() == ["whoami"]
    everything = captured.out + captured.err + caplog.text
    assert token not in everything
    if token == ODD_TOKEN:  # TOKEN's pieces include "oken", which every message about tokens has
        assert leaked(token, everything) == []


def test_push_to_hub_with_a_good_token_asks_whoami_first(hub, push_config, tmp_path, capsys):
    out = tmp_path / "out"
    assert run([str(push_config), str(out), "--push-to-hub", "test-user/mine", "--token", TOKEN + "\r\n",
                "--quiet"]) == 0, capsys.readouterr().err
    assert hub.routes_called()[0] == "whoami" and "model.safetensors" in hub.files("test-user/mine")


@pytest.mark.parametrize("role", ["write", "fineGrained"])
def test_check_write_access(hub, role):
    hub.role = role
    assert check_write_access("org/model", TOKEN)["name"] == "test-user"
    assert check_write_access("mine-without-namespace", TOKEN)["name"] == "test-user"
    if role == "fineGrained":  # its per-repository permissions are the upload's to check
        check_write_access("someone-else/model", TOKEN)
    else:
        with pytest.raises(HubUploadError, match="neither the token's user") as info:
            check_write_access("someone-else/model", TOKEN)
        assert info.value.repo_id == "someone-else/model"


def test_a_rate_limited_token_check_is_only_a_warning(hub):
    hub.faults["whoami"] = 429
    warnings = []
    assert check_write_access("org/model", TOKEN, warn=warnings.append) == {}
    assert len(warnings) == 1 and "HTTP 429" in warnings[0] and "org/model" in warnings[0]


def test_check_publish_target_raises_click_errors(hub):
    hub.role = "read"
    with pytest.raises(click.ClickException, match="no write access"):
        check_publish_target("org/model", TOKEN)
    with pytest.raises(click.ClickException, match="rejected the token"):
        check_publish_target("org/model", ODD_TOKEN)
    with pytest.raises(HubUploadError) as info:
        check_write_access("org/model", ODD_TOKEN)
    assert info.value.status == 401 and info.value.repo_id == "org/model"


def test_a_read_only_token_is_refused_by_the_upload_too(hub, merged_output, capsys):
    hub.role = "read"
    assert upload_cli(merged_output, "org/read-only", "--token", TOKEN) == 1
    err = capsys.readouterr().err
    assert "no write access" in err and "HTTP 403" in err
    assert "org/read-only" not in hub.repos  # the Hub refused to create it (HTTP 403)
