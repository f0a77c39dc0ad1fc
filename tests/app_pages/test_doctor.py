"""/doctor through AppTest: each sample a link with its verdict and findings, an upload diagnosed
in a worker and kept in no shared cache, a hostile upload refused as inert text, hostile links."""

from __future__ import annotations

import io
import os

import pytest
import torch

from app_pages.common import server
from bnviz.explorer.doctor import engine
from bnviz.explorer.doctor.url import DoctorConfig
from bnviz.safe_load import write_safetensors
from tests.app_pages.helpers import page_text, run_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def badge(at) -> str:
    import re

    found = [g.group(1) for md in at.markdown if (g := re.search(r"-badge\[:material/\w+: (.*)\]$", md.value))]
    assert found, [m.value for m in at.markdown]
    return found[0]


def findings(at) -> list[dict]:
    return at.dataframe[0].value.to_dict("records") if at.dataframe else []


CASES = [  # sample, the badge's first words, a check id it must list
    ("healthy", "clean", "foldable"),
    ("nan", "needs a fix", "nonfinite-stats"),
    ("keras-momentum", "needs a fix", "tf-momentum"),
    ("dead-channels", "worth a look", "dead-channels"),
]


@pytest.mark.parametrize("sample, words, check", CASES)
def test_each_sample_is_a_link_with_its_verdict_and_findings(sample, words, check):
    at = run_app({} if sample == "healthy" else {"sample": sample}, page="doctor")
    assert badge(at).startswith(words), badge(at)
    assert check in {f["check"] for f in findings(at)}, findings(at)
    assert len(at.get("plotly_chart")) == 1
    assert "Eval-mode accuracy of this sample" in page_text(at)
    assert (dict(at.query_params) == {}) == (sample == "healthy"), dict(at.query_params)


def test_a_hostile_link_falls_back_with_an_inert_warning():
    at = run_app({"sample": "[x](https://evil.example)"}, page="doctor")
    assert at.warning and "`[x](https://evil.example)`" in at.warning[0].value, at.warning[0].value
    assert badge(at).startswith("clean")


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_an_upload_is_diagnosed_in_a_worker_and_kept_out_of_the_shared_cache():
    at = run_app(page="doctor")
    report = engine.run(DoctorConfig("nan"))
    assert report.file is not None
    at.file_uploader[0].set_value(("mine.safetensors", report.file, "application/octet-stream"))
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "mine.safetensors" in " ".join(t.value for t in at.text), [t.value for t in at.text]
    assert "nonfinite-stats" in {f["check"] for f in findings(at)}
    assert "Not checked: tf-momentum" in text, text
    keys = list(server().reports._values)
    assert not [k for k in keys if "upload" in repr(k)], keys


def test_a_code_running_pickle_is_refused_as_inert_text_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2), "x": _Payload(str(marker))}, buf)
    at = run_app(page="doctor")
    at.file_uploader[0].set_value(("[evil](https://evil.example).pt", buf.getvalue(), "application/octet-stream"))
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith("Refused: `") and "weights_only" in errors[0], errors
    assert not marker.exists()
    nan = write_safetensors({"bn.running_mean": torch.full((3,), float("nan")), "bn.running_var": torch.ones(3)})
    at.file_uploader[0].set_value(("nan.safetensors", nan, "application/octet-stream"))
    at.run(timeout=120)
    assert "nonfinite-stats" in {f["check"] for f in findings(at)}
