"""Many checkpoints per process over HTTP, against a real runtime: selection by `model`, the start
list (/ready 503 and 503 + Retry-After for its name while one loads), /v1/models, and every
status of the admin API."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time

import pytest
from safetensors.torch import load_file, save_file

from bem_runtime.model.toy import write_variant

from .conftest import API_KEY

pytestmark = pytest.mark.http
ADMIN_TOKEN = "admin-token-0123456789abcdef"
GEN = {"prompt": "The quick brown fox", "max_new_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def root(toy_assets, tmp_path_factory):
    """A checkpoint root: a smaller variant, a twin of the start checkpoint, one with a
    mis-shaped tensor, one for another base (make-toy --foreign), one whose tensor file is a
    pipe (its load waits until the test writes it), and a symlink that leads outside."""
    root = tmp_path_factory.mktemp("ckpts")
    bem = toy_assets[1]
    write_variant(bem, root / "small", seed=2, num_experts=3, rank=2)
    shutil.copytree(bem, root / "twin")
    shutil.copytree(bem, root / "broken")
    tensors = load_file(str(root / "broken" / "experts.safetensors"))
    tensors["B.model.layers.3.mlp.down_proj"] = tensors["B.model.layers.3.mlp.down_proj"][:, :5].contiguous()
    save_file(tensors, str(root / "broken" / "experts.safetensors"))
    shutil.copytree(bem.parent / "foreign" / "bem", root / "foreign")
    (root / "slow").mkdir()
    shutil.copy(bem / "bem_config.json", root / "slow")
    os.mkfifo(root / "slow" / "experts.safetensors")
    (root / "outside").symlink_to(bem, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def multi_held(start_server, root, tmp_path_factory):
    """A server whose start-list checkpoint 'slow' is held (its file is a pipe) until a test
    writes it: the first test below watches /ready wait for it."""
    files = tmp_path_factory.mktemp("admin")
    (files / "token").write_text(ADMIN_TOKEN + "\n")
    (files / "start.json").write_text(json.dumps({"slow": "slow", "listed-broken": "broken"}))
    # Not Ready until 'slow' is in: wait only for the base model (its start checkpoint 'toy').
    return start_server("--admin-token-file", str(files / "token"), "--checkpoint-root", str(root),
                        "--checkpoints-file", str(files / "start.json"), "--max-checkpoints", "4",
                        until=lambda ready: "toy" not in ready.json().get("loading", []))


@pytest.fixture
def multi(multi_held, root):
    """That server once its start list is in. The first test releases 'slow'; a test that gets
    the module's server first (pytest-xdist hands the tests of a module to both workers)
    releases it here."""
    ready = multi_held.request("GET", "/ready", key=None)
    if ready.status != 200 and "slow" in ready.json().get("loading", []):
        _release_slow(root)
    deadline = time.monotonic() + 30
    while multi_held.request("GET", "/ready", key=None).status != 200:
        assert time.monotonic() < deadline, multi_held.log()[-2000:]
        time.sleep(0.1)
    return multi_held


def admin(server, method, path, body=None, token=ADMIN_TOKEN):
    return server.request(method, path, body, key=token)


def _release_slow(root) -> None:
    """Write the pipe's tensors: the held start-list load of 'slow' finishes."""
    data = (root / "twin" / "experts.safetensors").read_bytes()
    with open(root / "slow" / "experts.safetensors", "wb") as pipe:
        pipe.write(data)


def test_not_ready_until_the_start_list_is_in_then_served(multi_held, root):
    """A pod of a scale-up must not take traffic before it holds its start list: /ready is 503
    while 'slow' loads, 200 once it is served and the broken entry was dropped."""
    multi = multi_held
    not_ready = multi.request("GET", "/ready", key=None)
    assert not_ready.status == 503, not_ready.body
    assert not_ready.json() == {"ready": False, "reason": "loading",
                                "loading": ["listed-broken", "slow"]}
    assert multi.metric("bem_ready") == 0
    loading = multi.request("POST", "/v1/completions", {"model": "slow", "prompt": "hi"})
    assert loading.status == 503 and int(loading.headers["Retry-After"]) >= 1
    assert "still loading" in loading.json()["error"]["message"]
    listed = {m["id"]: m for m in multi.request("GET", "/v1/models").json()["data"]}
    assert listed["slow"]["ready"] is False and listed["toy"]["ready"] is True
    assert listed["toy"]["parent"] == "base"
    # The held load reads its file off the engine thread: a stream runs to its end meanwhile.
    stream = multi.request("POST", "/v1/generate", {**GEN, "max_new_tokens": 16, "stream": True}, timeout=20)
    events = [json.loads(line[6:]) for line in stream.body.decode().splitlines() if line.startswith("data: ")]
    assert stream.status == 200 and events[-1]["type"] == "done", stream.body[-500:]
    assert sum(e["type"] == "token" for e in events) >= 1 and events[-1]["usage"]["completion_tokens"] >= 1
    states = {c["name"]: c["state"] for c in admin(multi, "GET", "/v1/checkpoints").json()["data"]}
    assert states["slow"] == "loading"  # still held: the stream did not wait for it
    assert multi.request("GET", "/ready", key=None).status == 503
    writer = threading.Thread(target=_release_slow, args=(root,))
    writer.start()
    deadline = time.monotonic() + 30
    while (ready := multi.request("GET", "/ready", key=None)).status != 200:
        assert ready.json()["reason"] == "loading", ready.body
        assert time.monotonic() < deadline, multi.log()[-2000:]
        time.sleep(0.1)
    writer.join(10)
    # Ready means served: no request for the start list waits any more.
    assert multi.request("POST", "/v1/completions", {"model": "slow", "prompt": "hi"}).status == 200
    assert multi.metric("bem_ready") == 1
    # The start list's broken entry was refused, logged, counted and dropped.
    names = [c["name"] for c in admin(multi, "GET", "/v1/checkpoints").json()["data"]]
    assert "listed-broken" not in names and "slow" in names
    assert multi.request("POST", "/v1/completions", {"model": "listed-broken", "prompt": "hi"}).status == 404
    assert multi.metric("bem_checkpoint_load_failures_total", reason="invalid_checkpoint") >= 1
    assert "Failed to load a checkpoint of the start list" in multi.log()


def test_admin_api_needs_its_own_token(multi, server):
    off = server.request("GET", "/v1/checkpoints")
    assert off.status == 403 and "--admin-token-file" in off.json()["error"]["message"]
    assert multi.request("GET", "/v1/checkpoints", key=None).status == 401
    assert admin(multi, "GET", "/v1/checkpoints", token="wrong-token-0123456789").status == 401
    client = multi.request("GET", "/v1/checkpoints")  # a valid client API key
    assert client.status == 403 and "client API key" in client.json()["error"]["message"]
    assert multi.request("POST", "/v1/generate", GEN, key=ADMIN_TOKEN).status == 401  # and back
    listing = admin(multi, "GET", "/v1/checkpoints")
    assert listing.status == 200 and listing.json()["capacity"] == 4
    toy = next(c for c in listing.json()["data"] if c["name"] == "toy")
    assert toy["state"] == "loaded" and toy["num_experts"] == 4 and toy["bytes"] > 0
    assert toy["loaded_at"].endswith("Z") and toy["path"].endswith("bem")
    outside = admin(multi, "PUT", "/v1/checkpoints/toy", {"path": toy["path"]})  # not under the root
    assert outside.status == 400 and outside.json()["error"]["field"] == "path"


def test_put_validates_name_path_and_checkpoint_and_a_failure_changes_nothing(multi, root, toy_assets):
    before = admin(multi, "GET", "/v1/checkpoints").json()
    bad_name = admin(multi, "PUT", "/v1/checkpoints/Bad_Name", {"path": "small"})
    assert bad_name.status == 400 and bad_name.json()["error"]["field"] == "name"
    for path in ("../", str(toy_assets[1]), "outside", "small/../../"):
        refused = admin(multi, "PUT", "/v1/checkpoints/escape", {"path": path})
        assert refused.status == 400, path
        assert refused.json()["error"]["field"] == "path" and "outside" in refused.json()["error"]["message"]
    broken = admin(multi, "PUT", "/v1/checkpoints/broken", {"path": "broken"})
    assert broken.status == 422
    assert "B.model.layers.3.mlp.down_proj' has shape [4, 5, 4]" in broken.json()["error"]["message"]
    assert "needs [4, 64, 4]" in broken.json()["error"]["message"]
    foreign = admin(multi, "PUT", "/v1/checkpoints/foreign", {"path": "foreign"})
    assert foreign.status == 422 and foreign.json()["error"]["field"] == "path"
    assert ("tensor 'router.weight' has shape [4, 96] in the checkpoint but the base model needs "
            "[4, 64]") in foreign.json()["error"]["message"]
    missing = admin(multi, "PUT", "/v1/checkpoints/missing", {"path": "nothing-here"})
    assert missing.status == 422 and "has no bem_config.json" in missing.json()["error"]["message"]
    body = admin(multi, "PUT", "/v1/checkpoints/small", {"pathh": "small"})
    assert body.status == 400 and body.json()["error"]["field"] == "path"  # the missing one
    assert admin(multi, "GET", "/v1/checkpoints").json() == before
    assert multi.metric("bem_checkpoint_load_failures_total", reason="path") >= 4


def test_put_select_replace_delete_and_capacity(multi, root):
    _wait_until_served(multi, "slow")
    created = admin(multi, "PUT", "/v1/checkpoints/small", {"path": "small"})
    assert created.status == 201 and created.json()["num_experts"] == 3
    again = admin(multi, "PUT", "/v1/checkpoints/small", {"path": str(root / "small")})
    assert again.status == 200 and again.json()["loaded_at"] == created.json()["loaded_at"]
    out = multi.request("POST", "/v1/generate", {**GEN, "model": "small"}).json()
    assert out["model"] == "small" and max(e for d in out["routing"] for e in d["experts"]) < 3
    assert multi.metric("bem_checkpoints_resident") == 3
    # Capacity 4: toy, slow, small and one more; a fifth name is refused naming the flag.
    assert admin(multi, "PUT", "/v1/checkpoints/fourth", {"path": "twin"}).status == 201
    full = admin(multi, "PUT", "/v1/checkpoints/fifth", {"path": "twin"})
    assert full.status == 409 and "--max-checkpoints" in full.json()["error"]["message"]
    # Replacing under the same name: new requests get the new checkpoint.
    replaced = admin(multi, "PUT", "/v1/checkpoints/small", {"path": "twin"})
    assert replaced.status == 200 and replaced.json()["num_experts"] == 4
    toy = multi.request("POST", "/v1/generate", {**GEN, "model": "toy"}).json()
    twin = multi.request("POST", "/v1/generate", {**GEN, "model": "small"}).json()
    assert (twin["text"], twin["routing"]) == (toy["text"], toy["routing"])
    assert admin(multi, "DELETE", "/v1/checkpoints/fourth").status == 204
    assert admin(multi, "DELETE", "/v1/checkpoints/fourth").status == 404
    gone = multi.request("POST", "/v1/completions", {"model": "fourth", "prompt": "hi"})
    assert gone.status == 404 and gone.json()["error"]["field"] == "model"
    assert "'small'" in gone.json()["error"]["message"] and "'toy'" in gone.json()["error"]["message"]
    ids = [m["id"] for m in multi.request("GET", "/v1/models").json()["data"]]
    assert ids == ["slow", "small", "toy"]
    assert multi.request("POST", "/v1/route", {"prompt": "hi", "model": "small"}).json()["model"] == "small"


def _wait_until_served(server, name: str) -> None:
    deadline = time.monotonic() + 30
    while server.request("POST", "/v1/completions", {"model": name, "prompt": "hi"}).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_client_key_still_works_on_the_api(multi):
    assert multi.key == API_KEY
    assert multi.request("POST", "/v1/generate", GEN).status == 200


def test_a_request_running_on_a_removed_checkpoint_finishes_on_it(multi):
    """DELETE lands between decode steps of a long stream on that checkpoint: the stream ends
    normally with the same text as before, and new requests get 404."""
    assert admin(multi, "PUT", "/v1/checkpoints/leaving", {"path": "small"}).status in (200, 201)
    body = {"prompt": "The quick brown fox", "max_new_tokens": 300, "temperature": 0, "model": "leaving"}
    expected = multi.request("POST", "/v1/generate", body, timeout=120).json()
    conn = http.client.HTTPConnection("127.0.0.1", multi.port, timeout=120)
    conn.request("POST", "/v1/generate", body=json.dumps({**body, "stream": True}),
                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
                          "X-Request-ID": "leaving-stream"})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.readline().startswith(b"data: ")  # generation runs
    assert admin(multi, "DELETE", "/v1/checkpoints/leaving").status == 204
    assert multi.request("POST", "/v1/generate", body).status == 404
    events = [json.loads(line[6:]) for line in stream.read().splitlines() if line.startswith(b"data: ")]
    conn.close()
    done = events[-1]
    assert done["type"] == "done" and done["model"] == "leaving"
    assert (done["text"], done["routing"]) == (expected["text"], expected["routing"])
    # Not vacuous: the checkpoint was removed while the stream was still running (the access
    # line of the stream is written when it ends).
    deadline = time.monotonic() + 10
    while '"request_id": "leaving-stream"' not in multi.log():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = multi.log().splitlines()
    finished = next(i for i, line in enumerate(lines) if '"request_id": "leaving-stream"' in line)
    removed = next(i for i, line in enumerate(lines) if "Removed a checkpoint" in line and "leaving" in line)
    assert removed < finished


def test_per_checkpoint_metrics(multi):
    multi.request("POST", "/v1/generate", {**GEN, "model": "slow"})
    routed = {e: multi.metric("bem_routing_decisions_total", checkpoint="slow", expert=str(e)) for e in range(4)}
    assert sum(routed.values()) >= 2
    assert multi.metric("bem_tokens_total", checkpoint="slow", kind="completion") >= 1
    assert multi.metric("bem_checkpoint_requests_total", checkpoint="slow", endpoint="/v1/generate",
                        status="200") >= 1
    assert multi.metric("bem_checkpoint_load_duration_seconds_count") >= 2
    assert multi.metric("bem_checkpoint_load_failures_total", reason="capacity") >= 1
    assert multi.metric("bem_checkpoints_resident") == len(multi.request("GET", "/v1/models").json()["data"])


def test_a_replaced_admin_token_is_read_again_and_the_old_one_refused(start_server, tmp_path):
    """The token file is a mounted Secret; the operator recreates a deleted one with a new token
    and the kubelet updates the file in place: the runtime takes the new token without a
    restart."""
    token = tmp_path / "token"
    token.write_text(ADMIN_TOKEN + "\n")
    server = start_server("--admin-token-file", str(token))
    assert admin(server, "GET", "/v1/checkpoints").status == 200
    new = "replaced-token-0123456789abcdef"
    token.write_text(new + "\n")
    time.sleep(1.1)  # the runtime reads the file again at most once a second
    assert admin(server, "GET", "/v1/checkpoints", token=new).status == 200
    assert admin(server, "GET", "/v1/checkpoints").status == 401
