"""Real services on localhost: ``bentoml serve`` of bento/ for every node and the aggregator."""

from __future__ import annotations

import httpx
import pytest
import torch
from conftest import token_inputs
from serving_fleet import greedy, saved_student
from torch.testing import assert_close

from coformer.serving.config import Deployment
from coformer.serving.local import LocalDeployment

pytestmark = pytest.mark.slow
API_TOKEN = "test-api-token"
PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13]]


def post(url: str, api: str, token: str | None = API_TOKEN, **body) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/{api}", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def bert(tmp_path_factory, monkeypatch_module):
    """BERT at s=0 in degraded mode (a full fleet answers exactly all the same)."""
    folder, student = saved_student(tmp_path_factory.mktemp("bert"), "bert", 0)
    with LocalDeployment(folder, folder / "run", Deployment(failure_mode="degraded"), api_token=API_TOKEN) as local:
        yield local, student


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        yield mp


def test_embed_equals_the_executor_and_tokens_are_required(bert):
    local, student = bert
    inputs = token_inputs()
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    answer = post(local.url, "embed", input_ids=rows)
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        want = student(inputs).output
    assert_close(torch.tensor(answer.json()["embeddings"]), want, atol=1e-5, rtol=1e-5)
    assert answer.json()["degraded"] is False
    assert post(local.url, "embed", token=None, input_ids=rows).status_code == 401
    assert post(local.url, "embed", token="wrong", input_ids=rows).status_code == 401
    node = local.services["d0"].url
    assert httpx.post(f"{node}/step", content=b"x", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(f"{node}/step", content=b"x").status_code == 401


def test_oversized_requests_get_a_4xx_naming_the_limit(bert):
    local, _ = bert
    too_many = post(local.url, "embed", input_ids=[[1, 2]] * 33)
    assert too_many.status_code == 413 and "max_batch=32" in too_many.text
    too_long = post(local.url, "embed", input_ids=[[1] * 600])
    assert too_long.status_code == 413 and "max_seq_len" in too_long.text
    bad_id = post(local.url, "embed", input_ids=[[1, 100]])
    assert bad_id.status_code == 400 and "vocabulary" in bad_id.text


def test_degraded_answer_is_flagged_when_a_node_dies(bert):
    local, _ = bert
    local.stop("d1")
    answer = post(local.url, "embed", input_ids=[[1, 2, 3]])
    assert answer.status_code == 200, answer.text
    assert answer.json()["degraded"] is True and answer.json()["missing"] == ["d1"]


def expected_tokens(student, steps: int = 20) -> list[list[int]]:
    ids = torch.tensor([PROMPTS[0], [0, 0, *PROMPTS[1]]])  # left-padded as the aggregator pads
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    return greedy(student, ids, mask, steps).tolist()


@pytest.mark.parametrize("sync", [0, 1])
def test_generate_20_greedy_tokens_equals_the_in_process_loop(tmp_path, monkeypatch_module, sync):
    """At s=0 also: fail_fast 503 while a node is down (never later than the timeout), the node
    used again once restarted, and its KV cache rebuilt mid-session with the same tokens."""
    folder, student = saved_student(tmp_path, "gpt2", sync)
    deployment = Deployment(failure_mode="fail_fast", timeout_s=3.0)
    with LocalDeployment(folder, folder / "run", deployment, api_token=API_TOKEN) as local:
        answer = post(local.url, "generate", input_ids=PROMPTS, max_new_tokens=20)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tokens"] == expected_tokens(student)
        if sync == 1:
            return
        first = post(local.url, "generate", input_ids=PROMPTS, max_new_tokens=8, keep=True)
        local.stop("d1")  # the session's KV caches on d1 are gone with it
        refused = post(local.url, "generate", input_ids=PROMPTS, max_new_tokens=4)
        assert refused.status_code == 503 and "d1" in refused.text
        assert refused.elapsed.total_seconds() < deployment.timeout_s
        local.start("d1")
        local.wait_ready("d1")
        rest = post(local.url, "generate", session=first.json()["session"], max_new_tokens=12)  # d1 used again, cache rebuilt
        assert rest.status_code == 200 and rest.json()["degraded"] is False, rest.text
        assert [a + b for a, b in zip(first.json()["tokens"], rest.json()["tokens"])] == expected_tokens(student)
