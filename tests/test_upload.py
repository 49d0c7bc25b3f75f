"""Publishing: the real huggingface_hub client against the local fake Hub in ``hub_server``."""

import hashlib
import json
import logging
import shutil
import time
import types
from pathlib import Path
from typing import Dict, Tuple

import pytest
import yaml

from hub_server import FakeHub
from mergekit_awd.cli import run
from mergekit_awd.hub.upload import HubUploadError, upload_output
from mergekit_awd.pipeline.output_layout import (
    COMPLETION_MARKER,
    IncompleteOutputError,
    check_finished_output,
    weight_files,
)
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.testing.synthetic import awd_config

TOKEN = "hf_TestTokenDoNotLeak0123456789abcdefgh"
FAST = {"steps": 20}


@pytest.fixture(scope="module")
def merged_output(tiny_family, tmp_path_factory) -> Path:
    """A finished awd merge of the tiny family (weights, card, heatmap, report, marker)."""
    out = tmp_path_factory.mktemp("merged") / "out"
    run_merge(awd_config(tiny_family, parameters=FAST), out)
    return out


@pytest.fixture
def output_copy(merged_output, tmp_path) -> Path:
    """A private copy of the merged output that a test may change."""
    copy = tmp_path / "out"
    shutil.copytree(merged_output, copy)
    return copy


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake Hub on 127.0.0.1, with huggingface_hub pointed at it and online for this test."""
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import constants

    server = FakeHub(token=TOKEN, orgs=["org"]).start()  # the tests publish to org/...
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks LFS, not Xet
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    # huggingface_hub retries dropped connections with 1, 2, 4, 8, 8 s pauses: skip the pauses.
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(
        sleep=lambda seconds: None, time=time.time, monotonic=time.monotonic))
    yield server
    hf_http.close_session()
    server.stop()


def folder_files(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def snapshot(folder: Path) -> Dict[str, Tuple[str, int]]:
    """Content hash and modification time of every file: any change shows."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def without_gitattributes(files: Dict[str, bytes]) -> Dict[str, bytes]:
    return {k: v for k, v in files.items() if k != ".gitattributes"}


# --------------------------------------------------------------------------- the output folder


def test_merge_writes_the_completion_marker_last(merged_output):
    marker = merged_output / COMPLETION_MARKER
    content = json.loads(marker.read_text())
    assert content["merge_method"] == "awd"
    assert content["weights"] == {"model.safetensors": (merged_output / "model.safetensors").stat().st_size}
    newest_other = max(p.stat().st_mtime_ns for p in merged_output.iterdir() if p.name != COMPLETION_MARKER)
    assert marker.stat().st_mtime_ns >= newest_other
    assert check_finished_output(str(merged_output)).weight_files == ("model.safetensors",)


def test_sharded_weights_need_every_shard(tmp_path):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(IncompleteOutputError, match="model-00002-of-00002.safetensors"):
        weight_files(str(tmp_path))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"y")
    assert weight_files(str(tmp_path)) == ["model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                           "model-00002-of-00002.safetensors"]


@pytest.mark.parametrize("damage", ["no marker", "no weights", "truncated weights"])
def test_upload_refuses_an_unfinished_folder(hub, output_copy, capsys, damage):
    if damage == "no marker":
        (output_copy / COMPLETION_MARKER).unlink()
        expected = COMPLETION_MARKER
    elif damage == "no weights":
        (output_copy / "model.safetensors").unlink()
        expected = "no model weights"
    else:
        with open(output_copy / "model.safetensors", "r+b") as handle:
            handle.truncate(1000)
        expected = "changed since the merge finished"
    assert run(["upload", str(output_copy), "org/model", "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert expected in err and str(output_copy) in err
    assert hub.requests == []


# --------------------------------------------------------------------------- successful uploads


def test_files_arrive_byte_for_byte_without_the_marker(hub, merged_output):
    result = upload_output(str(merged_output), "org/awd-merge", token=TOKEN, progress=False)
    arrived = hub.files("org/awd-merge")
    expected = folder_files(merged_output)
    del expected[COMPLETION_MARKER]
    assert without_gitattributes(arrived) == expected
    assert {"model.safetensors", "README.md", "awd_cosines.png", "awd_report.json"} <= set(arrived)
    assert hub.uploaded_lfs_bytes() >= len(expected["model.safetensors"])  # the weights went by LFS
    assert result.commit_oid == hub.commits("org/awd-merge")[-1]["oid"]
    assert result.revision == "main" and COMPLETION_MARKER not in result.files


@pytest.mark.parametrize("private", [True, False])
def test_private_reaches_the_create_call(hub, merged_output, private):
    upload_output(str(merged_output), "org/visibility", private=private, token=TOKEN, progress=False)
    (call,) = hub.create_calls
    assert (call["organization"], call["name"]) == ("org", "visibility")
    assert call.get("visibility") == ("private" if private else None)
    assert hub.repos["org/visibility"].private is private


def test_second_upload_sends_no_weight_bytes_again(hub, output_copy):
    upload_output(str(output_copy), "org/again", token=TOKEN, progress=False)
    weights_sent = hub.uploaded_lfs_bytes()
    commits = len(hub.commits("org/again"))
    seen = len(hub.requests)

    upload_output(str(output_copy), "org/again", token=TOKEN, progress=False)
    assert "lfs_upload" not in hub.routes_called()[seen:]
    assert hub.uploaded_lfs_bytes() == weights_sent
    assert len(hub.commits("org/again")) == commits  # nothing changed: no empty commit

    readme = output_copy / "README.md"
    readme.write_text(readme.read_text() + "\nEdited after the merge.\n")
    seen = len(hub.requests)
    upload_output(str(output_copy), "org/again", token=TOKEN, progress=False)
    assert "lfs_upload" not in hub.routes_called()[seen:]
    assert hub.commits("org/again")[-1]["changed"] == ["README.md"]
    assert hub.files("org/again")["README.md"] == readme.read_bytes()


def test_merge_with_push_to_hub(hub, tiny_family, tmp_path, capsys):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(awd_config(tiny_family, parameters=FAST)))
    out = tmp_path / "out"
    code = run([str(config), str(out), "--push-to-hub", "org/pushed", "--private", "--revision", "dev",
                "--commit-message", "AWD merge of three fine-tunes", "--token", TOKEN])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert hub.create_calls[-1]["visibility"] == "private"
    expected = folder_files(out)
    del expected[COMPLETION_MARKER]
    assert without_gitattributes(hub.files("org/pushed", "dev")) == expected
    assert set(hub.files("org/pushed", "main")) == {".gitattributes"}
    last = hub.commits("org/pushed")[-1]
    assert (last["branch"], last["message"]) == ("dev", "AWD merge of three fine-tunes")
    assert "Uploaded to" in captured.err
    assert TOKEN not in captured.out + captured.err


@pytest.mark.parametrize("source", ["HF_TOKEN", "login cache"])
def test_upload_command_finds_the_token(hub, merged_output, monkeypatch, source, capsys):
    from huggingface_hub import constants

    if source == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    else:
        Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
        Path(constants.HF_TOKEN_PATH).write_text(TOKEN)
    assert run(["upload", str(merged_output), "org/found", "--quiet"]) == 0, capsys.readouterr().err
    assert "model.safetensors" in hub.files("org/found")
    assert all(r.authorized for r in hub.requests if r.route not in ("lfs_upload", "unknown"))


def test_no_token_is_an_error_before_any_request(hub, merged_output, capsys):
    assert run(["upload", str(merged_output), "org/no-token"]) == 1
    err = capsys.readouterr().err
    assert "no Hugging Face token" in err and "org/no-token" in err
    assert hub.requests == []


def test_push_target_is_checked_before_merging(hub, tiny_family, tmp_path, capsys):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(awd_config(tiny_family, parameters=FAST)))
    out = tmp_path / "out"
    assert run([str(config), str(out), "--push-to-hub", "not a repo/id!", "--token", TOKEN]) == 1
    assert "not a Hub repository id" in capsys.readouterr().err
    assert not out.exists() and hub.requests == []


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("failure", ["401", "404", "dropped at commit", "dropped during weight upload"])
def test_failure_gives_one_clear_error_and_leaves_the_output_untouched(
        hub, merged_output, capsys, caplog, failure):
    repo = "org/failing"
    token = TOKEN
    if failure == "401":
        token = "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99"
        expected = "HTTP 401"
    elif failure == "404":
        hub.foreign_repos.add(repo)
        expected = "HTTP 404"
    elif failure == "dropped at commit":
        hub.faults["commit"] = "drop"
        expected = "connection to"
    else:
        hub.faults["lfs_upload"] = "drop"
        expected = "connection to"
    before = snapshot(merged_output)
    caplog.set_level(logging.DEBUG)

    assert run(["upload", str(merged_output), repo, "--token", token]) == 1

    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert repo in errors[0] and expected in errors[0]
    assert snapshot(merged_output) == before
    everything = captured.out + captured.err + caplog.text
    assert TOKEN not in everything and token not in everything
    if repo in hub.repos:  # created, but the upload never completed a commit of the weights
        assert "model.safetensors" not in hub.files(repo)


def test_api_error_is_a_hub_upload_error(hub, merged_output):
    hub.faults["preupload"] = 404
    with pytest.raises(HubUploadError, match="org/api-404.*HTTP 404"):
        upload_output(str(merged_output), "org/api-404", token=TOKEN, progress=False)


def test_token_is_in_no_output_log_or_file(hub, merged_output, capsys, caplog):
    from huggingface_hub.utils import logging as hf_logging

    caplog.set_level(logging.DEBUG)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_debug()
    try:
        assert run(["upload", str(merged_output), "org/secret-safe", "--token", TOKEN]) == 0
    finally:
        hf_logging.set_verbosity(previous)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    secret = TOKEN.encode()
    assert not any(secret in content for content in folder_files(merged_output).values())
    assert not any(secret in content for content in hub.files("org/secret-safe").values())
